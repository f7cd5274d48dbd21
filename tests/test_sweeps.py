"""Hydra multirun: one directory and one logger run per job, failures that do not stop a sweep,
the Optuna search, and the submitit launchers (local here; SLURM config composed)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

import wandb_records
from runs import TINY, metrics, run_module
from segsuite.launch import suggest_loss_params

REPO = Path(__file__).resolve().parents[1]


def _sweep(tmp_path: Path, *overrides: str, check: bool = True):
    sweep = tmp_path / "sweep"
    proc = run_module("train", ["-m", *TINY, "trainer.max_epochs=1", "test=false", f"hydra.sweep.dir={sweep}",
                                *overrides],
                      cwd=tmp_path, check=check)
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return proc, sweep, jobs


def test_multirun_gives_each_job_its_own_directory_metrics_and_wandb_run(tmp_path):
    _, sweep, jobs = _sweep(tmp_path, "loss=ce,dice", "logger=wandb")
    assert [p.name for p in jobs] == ["0", "1"]
    run_ids, groups = set(), set()
    for job, loss in zip(jobs, ("CrossEntropyLoss", "DiceLoss")):
        assert OmegaConf.load(job / "config.yaml").loss._target_ == f"segsuite.losses.{loss}"
        assert 0.0 <= metrics(job)["val/mIoU"] <= 1.0
        (wandb_run,) = (job / "wandb").glob("offline-run-*")
        record = wandb_records.run_record(wandb_run)
        run_ids.add(record.run_id)
        groups.add(record.run_group)
        assert wandb_records.config(wandb_run)["loss"]["_target_"] == f"segsuite.losses.{loss}"
    assert len(run_ids) == 2                  # two W&B runs
    assert groups == {sweep.name}             # grouped by the sweep directory's name


def test_a_failed_job_is_reported_and_the_sweep_goes_on(tmp_path):
    missing = tmp_path / "missing.ckpt"
    proc, _, jobs = _sweep(tmp_path, f"ckpt_path={missing},null")
    assert [p.name for p in jobs] == ["0", "1"]
    failure = (jobs[0] / "FAILED").read_text()
    assert str(missing) in failure and "FileNotFoundError" in failure
    assert "job failed (sweep continues)" in proc.stderr and str(jobs[0]) in proc.stderr + proc.stdout
    assert not (jobs[1] / "FAILED").exists() and "val/mIoU" in metrics(jobs[1])


def test_optuna_config_searches_lr_loss_and_that_loss_parameters(compose_cfg):
    cfg = compose_cfg("train", ["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert cfg.hydra.mode.name == "MULTIRUN" and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/mIoU_best"
    assert sweeper.custom_search_space == "segsuite.launch.suggest_loss_params"
    searched = set(sweeper.params)
    assert {"optimizer.lr", "loss"} <= searched
    losses = sweeper.params.loss.removeprefix("choice(").removesuffix(")").replace(" ", "").split(",")
    for loss in losses:  # every searched loss exists and its searched parameters are keys of its config
        loss_cfg = yaml.safe_load((REPO / "conf" / "loss" / f"{loss}.yaml").read_text())
        assert set(cfg.sweep_loss_params.get(loss, {})) <= set(loss_cfg), loss

    for loss in ("focal", "tversky", "lovasz", "ce"):
        trial = optuna.create_study(direction="maximize").ask()
        trial.suggest_categorical("loss", [loss])
        suggest_loss_params(cfg, trial)
        expected = {f"loss.{p}" for p in cfg.sweep_loss_params[loss]}
        assert set(trial.params) - {"loss"} == expected
        for name, spec in cfg.sweep_loss_params[loss].items():
            value = trial.params[f"loss.{name}"]
            assert value in spec.choices if "choices" in spec else spec.low <= value <= spec.high


def test_a_malformed_loss_range_names_the_key(compose_cfg):
    cfg = compose_cfg("train", ["hparams_search=optuna"], return_hydra_config=True)
    cfg.sweep_loss_params.focal.gamma = {"high": 3.0}   # no `low`
    trial = optuna.create_study().ask()
    trial.suggest_categorical("loss", ["focal"])
    with pytest.raises(ValueError, match="sweep_loss_params.focal.gamma"):
        suggest_loss_params(cfg, trial)


def test_slurm_launcher_config_runs_one_task_per_gpu(compose_cfg):
    cfg = compose_cfg("train", ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                                "hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4 and launcher.nodes == 2
    assert launcher.partition == "gpu" and launcher.max_num_timeout >= 1
    assert cfg.trainer.sync_batchnorm is True and cfg.trainer.strategy.process_group_backend == "nccl"


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_writes_the_best_parameters(tmp_path):
    _, sweep, jobs = _sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                            "hydra.sweeper.sampler.n_startup_trials=2")
    assert len(jobs) == 3
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scores = {job.name: metrics(job)["val/mIoU_best"] for job in jobs}
    best_job = max(scores, key=scores.get)
    assert math.isclose(results["best_value"], scores[best_job], rel_tol=1e-9)
    overrides = yaml.safe_load((sweep / best_job / ".hydra" / "overrides.yaml").read_text())
    searched = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides if o.startswith(("optimizer.lr=", "loss"))}
    assert set(results["best_params"]) == set(searched)
    assert math.isclose(float(searched["optimizer.lr"]), results["best_params"]["optimizer.lr"])
    assert searched["loss"] == results["best_params"]["loss"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    _, sweep, jobs = _sweep(tmp_path, "loss=ce,dice", "hydra/launcher=local")
    assert [p.name for p in jobs] == ["0", "1"]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2   # ran as submitit jobs
    for job in jobs:
        assert "val/mIoU_best" in metrics(job)
