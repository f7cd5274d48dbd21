"""Runs that diverge fail (#27): a NaN/inf loss or weights stop the run with one line and exit 1, no
checkpoint holds them, a sweep counts the trial as failed; a batch larger than the split fails before step 0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from runs import TINY, metrics, run_module, train
from segsuite.callbacks import FiniteTraining, NonFiniteTrainingError


def nonfinite_in(path: Path) -> list[str]:
    """The weights, buffers and optimizer-state tensors of checkpoint `path` holding a NaN or an infinity."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    tensors = dict(ckpt["state_dict"])
    for i, opt in enumerate(ckpt.get("optimizer_states", [])):
        for param, state in opt["state"].items():
            tensors.update({f"optimizer{i}.{param}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
    return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]


# -- in process: a toy model whose loss, statistics or validation go non-finite at a chosen step ----------
class Toy(pl.LightningModule):
    """Linear -> BatchNorm -> Linear regression on 32 fixed samples (4 steps an epoch, batches of 8).

    nan_at: global steps whose training loss is NaN. inf_var_at: the step whose forward pass leaves an
    infinite BatchNorm running variance (training uses batch statistics, so the loss stays finite).
    nan_val: every validation loss is NaN though the weights are finite.
    """

    def __init__(self, nan_at=(), inf_var_at=None, nan_val=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
        self.nan_at, self.inf_var_at, self.nan_val = set(nan_at), inf_var_at, nan_val

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        return loss * math.nan if self.global_step in self.nan_at else loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.global_step == self.inf_var_at:   # the statistics the step's forward pass left
            self.net[1].running_var.fill_(math.inf)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.mse_loss(self.net(x), y) * (math.nan if self.nan_val else 1.0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader():
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)), batch_size=8)


def fit(module, ckpt_dir=None, max_steps=-1, callbacks=(), **finite) -> pl.Trainer:
    """Fit `module` for up to 3 epochs (12 steps) with FiniteTraining(**finite) and last.ckpt after each validation."""
    checkpoints = [ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None)] if ckpt_dir else []
    trainer = pl.Trainer(max_epochs=3, max_steps=max_steps, accelerator="cpu", logger=False,
                         callbacks=[FiniteTraining(**finite), *callbacks, *checkpoints], enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=bool(ckpt_dir))
    trainer.fit(module, loader(), loader())
    return trainer


def weights_after(steps: int) -> dict[str, torch.Tensor]:
    """The state of a Toy trained `steps` clean steps (the reference a guarded run must match)."""
    module = Toy()
    fit(module, max_steps=steps)
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_a_nan_loss_stops_before_its_step_and_the_last_checkpoint_is_the_last_finite_one(tmp_path):
    module = Toy(nan_at={6})
    with pytest.raises(NonFiniteTrainingError, match=r"training diverged: the loss is nan at step 6 \(epoch 2\)") \
            as err:
        fit(module, tmp_path)
    assert "callbacks.finite.max_nonfinite_steps" in str(err.value) and "optimizer.lr" in str(err.value)
    assert "last.ckpt" in str(err.value)                  # names what it kept
    reference = weights_after(6)   # the NaN step never reached the weights (its forward pass did run)
    assert_state_equal(dict(module.named_parameters()), {k: reference[k] for k, _ in module.named_parameters()})
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and not nonfinite_in(tmp_path / "last.ckpt")   # the epoch-1 validation's
    assert_state_equal({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}, weights_after(4))


class Snapshots(pl.Callback):
    """The module's state (weights and BatchNorm statistics) when each step starts and ends."""

    def __init__(self):
        self.start, self.end = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end[trainer.global_step - 1] = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_a_skip_budget_leaves_the_bad_steps_weights_and_statistics_unchanged_then_fails_when_used_up(tmp_path):
    snapshots = Snapshots()
    trainer = fit(Toy(nan_at={5}), tmp_path, callbacks=[snapshots], max_nonfinite_steps=1)
    assert trainer.global_step == 12                      # the run went on to its end
    assert_state_equal(snapshots.start[5], snapshots.end[5])
    assert any(not torch.equal(snapshots.start[6][k], snapshots.end[6][k]) for k in snapshots.start[6])
    finite = next(cb for cb in trainer.callbacks if isinstance(cb, FiniteTraining))
    assert finite.skipped == 1
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["FiniteTraining"] == {"skipped": 1}
    with pytest.raises(NonFiniteTrainingError, match=r"loss is nan at step 7 .* 1 skip\(s\) allowed .* used up"):
        fit(Toy(nan_at={5, 7}), max_nonfinite_steps=1)


def test_infinite_batchnorm_statistics_behind_a_finite_loss_fail_at_validation_before_the_checkpoint(tmp_path):
    with pytest.raises(NonFiniteTrainingError, match=r"weights are not finite after step 8 .*net\.1\.running_var"):
        fit(Toy(inf_var_at=7), tmp_path)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4
    assert not nonfinite_in(tmp_path / "last.ckpt")


def test_a_nan_validation_loss_with_finite_weights_fails_and_saves_nothing(tmp_path):
    with pytest.raises(NonFiniteTrainingError, match="the validation loss is nan after step 4.*no checkpoint was "
                                                     "written before"):
        fit(Toy(nan_val=True), tmp_path)
    assert not list(tmp_path.iterdir())


def test_no_checkpoint_with_non_finite_tensors_is_written(tmp_path):
    module = Toy()
    trainer = fit(module, max_steps=4)
    with torch.no_grad():
        module.net[2].weight[0, 0] = math.inf
    with pytest.raises(NonFiniteTrainingError, match=r"non-finite tensors \(state_dict\.net\.2\.weight\)"):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


# -- end to end: the run -------------------------------------------------------------------------
def test_lr_1e6_on_the_built_in_data_exits_1_with_one_line_and_leaves_no_nan_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = train(run, "optimizer.lr=1e6", "trainer.max_epochs=3", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "training diverged" in errors[0] and "Traceback" not in proc.stderr
    assert "val/mIoU_best" not in proc.stdout and not (run / "metrics.json").exists()
    for ckpt in run.glob("checkpoints/*.ckpt"):
        assert not nonfinite_in(ckpt), ckpt


# -- a batch larger than the split -----------------------------------------------------------------------
def test_a_batch_larger_than_the_train_split_fails_before_step_0_naming_the_numbers(tmp_path):
    run = tmp_path / "run"
    proc = train(run, "data.batch_size=32", check=False)   # TINY: 16 training images
    assert proc.returncode == 1
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    for fact in ("data.batch_size=32", "16 samples", "batches of 32 per process", "world size 1", "drop_last=true",
                 "data.batch_size<=16"):
        assert fact in error, error
    assert "Traceback" not in proc.stderr and "train/loss" not in proc.stdout and not run.exists()


def test_the_batch_check_counts_each_processs_share(compose_cfg, tmp_path):
    from segsuite.build import build_datamodule

    cfg = compose_cfg("train", [*TINY, "data.batch_size=32", f"paths.output_dir={tmp_path}"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    images = cfg.dataset.train.num_images
    assert len(dm.datasets["train"]) == images == 16
    with pytest.raises(ValueError, match=r"16 samples over 2 processes \(8 each\), batches of 16 per process "
                                         r"\(data.batch_size=32 / world size 2\) and drop_last=true"):
        dm.check_train_batches(2)
    dm.batch_size = 16
    assert dm.check_train_batches(1) == 1 and dm.check_train_batches(4) == 1
    dm.batch_size = 4
    assert dm.check_train_batches(2) == (images // 2) // 2
    dm.batch_size = 6
    with pytest.raises(ValueError, match="must divide by the 4 processes"):
        dm.check_train_batches(4)


# -- a sweep with a diverging trial ----------------------------------------------------------------------
@pytest.mark.slow
def test_optuna_sweep_records_the_diverging_trial_as_failed_and_its_best_is_a_finite_trial(tmp_path):
    """Four trials of the shipped Optuna search over four learning rates, one of them 1e6 (sampler seed 4
    draws each once): that trial fails, the other three complete, and the study's best value is the best
    of theirs, from a finite checkpoint."""
    sweep = tmp_path / "sweep"
    lrs = [1e-3, 2e-3, 3e-3, 1e6]
    proc = run_module("train", ["-m", *TINY, "trainer.max_epochs=2", "test=false", f"hydra.sweep.dir={sweep}",
                                "hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=4",
                                f"optimizer.lr=choice({','.join(map(str, lrs))})", "loss=ce",
                                f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}"], cwd=tmp_path)
    jobs = {_lr_of(job): job for job in sweep.iterdir() if job.name.isdigit()}
    assert sorted(jobs) == lrs, "the sampler no longer draws each learning rate once: pick another seed"
    diverged = jobs.pop(1e6)
    assert "NonFiniteTrainingError: training diverged" in (diverged / "FAILED").read_text()
    assert not (diverged / "metrics.json").exists()
    output = proc.stdout + proc.stderr   # the sweeper's record: the trial told as failed, not scored
    assert output.count("Failed experiment: Return value must be float-castable. Got 'None'") == 1, output[-3000:]
    scores = {lr: metrics(job)["val/mIoU_best"] for lr, job in jobs.items()}
    assert all(math.isfinite(score) for score in scores.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_lr = max(scores, key=scores.get)
    assert math.isclose(results["best_value"], scores[best_lr], rel_tol=1e-9)
    assert math.isclose(results["best_params"]["optimizer.lr"], best_lr)
    assert not nonfinite_in(jobs[best_lr] / "checkpoints" / "best.ckpt")
    import optuna  # the study as Optuna stored it: one failed trial, three complete ones with their scores
    study = optuna.load_study(study_name="segsuite", storage=f"sqlite:///{tmp_path / 'study.db'}")
    states = sorted(trial.state.name for trial in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == pytest.approx(sorted(scores.values()))
    assert study.best_value == pytest.approx(scores[best_lr])


def _lr_of(job: Path) -> float:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return float(next(o.split("=", 1)[1] for o in overrides if o.startswith("optimizer.lr=")))
