"""End-to-end: the training entry point, resume, evaluate, loggers and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from runs import TINY, assert_resume_equals_uninterrupted, metrics, run_module, train, val_rows


def test_default_train_writes_run_dir_checkpoints_and_metrics(tmp_path):
    run = tmp_path / "run"
    proc = train(run)
    assert "run directory:" in proc.stdout and "Validation metrics of the best epoch" in proc.stdout
    tips = [line for line in (proc.stdout + proc.stderr).splitlines() if "💡" in line or "Tip:" in line]
    assert not tips, tips  # Lightning's advertising is filtered out (segsuite.utils.runtime.quiet_lightning_tips)
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    m = metrics(run)
    for key in ("val/mIoU", "val/mIoU_best", "val/mAcc", "val/aAcc", "val/fwIoU", "test/mIoU",
                "val/IoU/background", "train/loss_epoch"):
        assert key in m, key
    assert 0.0 <= m["val/mIoU"] <= 1.0
    facts = json.loads((run / "run_facts.json").read_text())
    precision = OmegaConf.load(run / "config.yaml").trainer.precision  # hardware-dependent default, resolved
    assert facts == {"global_batch_size": 4, "per_device_batch_size": 4, "world_size": 1, "precision": str(precision),
                     "seed": 42, "data_verify": "full", "skipped_bad_samples": {}}
    rows = val_rows(run)
    assert len(rows) == 2
    assert float(rows[-1]["val/mIoU_best"]) == pytest.approx(max(float(r["val/mIoU"]) for r in rows))
    with open(run / "csv" / "metrics.csv") as fh:
        header = fh.readline()
    assert "lr-AdamW/head" in header
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    info = ckpt["segsuite"]
    assert info["class_names"][0] == "background" and len(info["palette"]) == 6
    assert info["config"]["model"]["_target_"] == "segsuite.models.unet.UNet"


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    full, resumed = assert_resume_equals_uninterrupted(
        tmp_path, ["trainer.deterministic=true", "trainer.max_epochs=3", "test=false"])
    assert torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * 16 // 4
    assert metrics(full)["val/mIoU_best"] == metrics(resumed)["val/mIoU_best"]


def test_evaluate_reproduces_validation_metrics_from_checkpoint_alone(tmp_path):
    run = tmp_path / "run"
    train(run, "test=false")
    best = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    best_score = next(v["best_model_score"] for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k)
    out = tmp_path / "eval"
    proc = run_module("evaluate", [f"ckpt_path={best}", f"hydra.run.dir={out}", "num_workers=0",
                                   "trainer.enable_progress_bar=false"], cwd=tmp_path)
    assert "mIoU" in proc.stdout
    assert json.loads((out / "metrics.json").read_text())["val/mIoU"] == pytest.approx(float(best_score), abs=1e-4)


def test_debug_overlays_and_other_loggers(tmp_path):
    run = tmp_path / "fdr"
    train(run, "debug=fdr")
    assert not (run / "checkpoints").exists()  # fast_dev_run writes no checkpoints
    run = tmp_path / "many"
    train(run, "debug=limit", "logger=many", "test=false")
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    assert list((run / "wandb").glob("offline-run-*"))
    assert (run / "csv" / "metrics.csv").is_file()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.base_chanels=8", "base_chanels"),           # typo in a key
        ("model=unett", "deeplabv3plus"),                   # unknown option: the choices are listed
        ("ckpt_path=/nonexistent/x.ckpt", "/nonexistent/x.ckpt"),
    ],
)
def test_bad_overrides_fail_before_work_naming_the_key(tmp_path, override, message):
    proc = train(tmp_path / "bad", override, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_evaluate_requires_a_checkpoint(tmp_path):
    proc = run_module("evaluate", [f"hydra.run.dir={tmp_path / 'e'}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "ckpt_path" in proc.stderr + proc.stdout


def test_runs_never_share_a_directory(tmp_path):
    run_module("train", TINY + ["debug=fdr"], cwd=tmp_path)
    run_module("train", TINY + ["debug=fdr"], cwd=tmp_path)
    runs = list((tmp_path / "outputs" / "debug" / "runs").iterdir())
    assert len(runs) == 2
