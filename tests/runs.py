"""Running the entry points as a user would (subprocess), with tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# A 2-level, 4-channel U-Net on 16 tiny images: seconds per run.
TINY = [
    "dataset.image_size=[32,32]", "dataset.crop_size=[32,32]",
    "dataset.train.num_images=16", "dataset.val.num_images=5", "dataset.test.num_images=5",
    "model.base_channels=4", "model.depth=2", "data.batch_size=4", "data.num_workers=0",
    "print_config=false", "trainer.enable_progress_bar=false", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
]


def run_module(module: str, overrides: list[str], cwd: Path, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m segsuite.<module> overrides...` in `cwd` (killed after `timeout` s); returns the completed process."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-m", f"segsuite.{module}", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"segsuite.{module} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train(run_dir: Path, *overrides: str, tiny: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Train into `run_dir` (hydra.run.dir)."""
    args = (TINY if tiny else []) + [f"hydra.run.dir={run_dir}", *overrides]
    return run_module("train", args, cwd=run_dir.parent, check=check)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def val_rows(run_dir: Path) -> list[dict]:
    """The CSV logger's rows that hold validation metrics."""
    import csv

    with open(run_dir / "csv" / "metrics.csv") as fh:
        return [r for r in csv.DictReader(fh) if r.get("val/mIoU")]


def assert_resume_equals_uninterrupted(tmp_path: Path, common: list[str]) -> tuple[Path, Path]:
    """Train `full`; train `part` stopped after one epoch; resume it into `resumed`. Asserts the
    resumed run ends with the same step, weights and buffers, learning rate and per-epoch val mIoU as `full`."""
    import torch

    full, part, resumed = tmp_path / "full", tmp_path / "part", tmp_path / "resumed"
    train(full, *common)
    train(part, *common, "+callbacks.stop._target_=segsuite.callbacks.StopAfterEpochs", "+callbacks.stop.epochs=1")
    assert len(val_rows(part)) == 1
    train(resumed, *common, f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}")
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] > 0
    # weights and buffers: BatchNorm's running statistics and num_batches_tracked are compared too
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any(key.endswith("num_batches_tracked") for key in a["state_dict"])
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["optimizer_states"][0]["param_groups"][0]["lr"] == b["optimizer_states"][0]["param_groups"][0]["lr"]
    assert [r["val/mIoU"] for r in val_rows(full)[1:]] == [r["val/mIoU"] for r in val_rows(resumed)]
    return full, resumed
