"""Runs whose output is not a terminal print plain progress lines and one line per validation."""

from __future__ import annotations

import io
import re

from runs import run_module
from segsuite.callbacks.progress import PlainProgress


def test_redirected_run_prints_progress_and_validation_lines(tmp_path):
    # subprocess output is a pipe, as under nohup, SLURM or CI: no tqdm bar, plain lines instead
    proc = run_module("train", [f"hydra.run.dir={tmp_path / 'run'}", "dataset.image_size=[32,32]",
                                "dataset.crop_size=[32,32]", "dataset.train.num_images=16", "dataset.val.num_images=4",
                                "model.base_channels=4", "model.depth=2", "data.batch_size=4", "data.num_workers=0",
                                "trainer.max_epochs=2", "test=false", "print_config=false",
                                "callbacks.plain_progress.every_n_seconds=0"], cwd=tmp_path)
    progress = re.findall(r"\[progress\] epoch (\d)/2 step (\d+)/8 loss \d+\.\d{4} [\d.]+ img/s "
                          r"elapsed \d:\d\d:\d\d eta \d:\d\d:\d\d", proc.stdout)
    assert [int(step) for _, step in progress] == list(range(1, 9))
    validations = re.findall(r"\[validation\] epoch (\d) step (\d+) .*val/mIoU \d\.\d{4}", proc.stdout)
    assert validations == [("1", "4"), ("2", "8")]
    assert "\r" not in proc.stdout + proc.stderr   # no progress-bar redraws in the log


def test_when_chooses_whether_to_print():
    stream = io.StringIO()
    callback = PlainProgress(when="never", stream=stream)
    assert not callback.enabled
    assert PlainProgress(when="always", stream=stream).enabled
