"""`torch_threads`, `float32_matmul_precision` and `malloc_tuning`: what a run sets before training, and their
validation."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segsuite.train import train
from segsuite.utils.runtime import quiet_lightning_tips, set_malloc_tuning, set_matmul_precision, set_torch_threads
from test_configs import TINY_INPROCESS

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_train_applies_torch_threads(compose_cfg, tmp_path, restore_threads):
    torch.set_num_threads(2)
    cfg = compose_cfg("train", [*TINY_INPROCESS, "torch_threads=1", f"paths.output_dir={tmp_path}", "test=false"])
    train(cfg)
    assert torch.get_num_threads() == 1


def test_null_keeps_the_current_count(restore_threads):
    torch.set_num_threads(2)
    set_torch_threads(None)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_thread_counts_are_refused_with_the_key_name(bad):
    with pytest.raises(ValueError, match="torch_threads"):
        set_torch_threads(bad)


@pytest.mark.parametrize("name", ["evaluate", "predict"])
def test_other_entry_points_expose_the_keys(compose_cfg, name):
    cfg = compose_cfg(name, ["ckpt_path=x", "input=x"] if name == "predict" else ["ckpt_path=x"])
    assert "torch_threads" in cfg and cfg.torch_threads is None
    assert cfg.float32_matmul_precision == "high"
    assert cfg.malloc_tuning is True


def test_train_applies_the_matmul_precision(compose_cfg, tmp_path, restore_matmul_precision):
    torch.set_float32_matmul_precision("highest")
    cfg = compose_cfg("train", [*TINY_INPROCESS, "float32_matmul_precision=medium", f"paths.output_dir={tmp_path}",
                                "test=false"])
    assert compose_cfg("train", []).float32_matmul_precision == "high"  # the shipped default
    train(cfg)
    assert torch.get_float32_matmul_precision() == "medium"


def test_null_matmul_precision_keeps_torchs_setting(restore_matmul_precision):
    torch.set_float32_matmul_precision("highest")
    set_matmul_precision(None)
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize("bad", ["tf32", "HIGH", 1])
def test_bad_matmul_precisions_are_refused_with_the_key_name(bad):
    with pytest.raises(ValueError, match="float32_matmul_precision"):
        set_matmul_precision(bad)


# A process that allocates 20 blocks of 4 MiB and 2 of 64 MiB (above glibc's largest mmap threshold,
# like the activations of a model at a paper's crop), writes and frees them, five rounds: the minor
# page faults of the last three rounds (after glibc's adaptive threshold has settled).
FAULT_PROBE = """
import resource, sys
import numpy as np
from segsuite.utils.runtime import set_malloc_tuning
applied = set_malloc_tuning({"on": True, "off": False, "null": None}[sys.argv[1]])
def allocate():
    blocks = [np.ones(2**19) for _ in range(20)] + [np.ones(2**23) for _ in range(2)]
    del blocks
allocate(); allocate()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    allocate()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_malloc_tuning_lets_the_heap_reuse_freed_tensors():
    def faults(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], capture_output=True, text=True,
                             check=True, timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)}).stdout.split()
        return int(out[0]), int(out[1])

    applied, tuned = faults("on")
    assert applied == 1
    for off in ("off", "null"):     # false and null leave glibc's defaults in place
        not_applied, default = faults(off)
        assert not_applied == 0
        assert default >= 100       # glibc hands the blocks back and faults them in again (34k faults here)
        assert tuned < default / 20  # kept in the heap: next to no faults


def test_train_applies_malloc_tuning(compose_cfg, tmp_path, monkeypatch):
    from segsuite.utils import runtime

    seen = []
    monkeypatch.setattr(runtime, "set_malloc_tuning", seen.append)
    cfg = compose_cfg("train", [*TINY_INPROCESS, "malloc_tuning=false", f"paths.output_dir={tmp_path}", "test=false"])
    assert compose_cfg("train", []).malloc_tuning is True  # the shipped default
    train(cfg)
    assert seen == [False]


@pytest.mark.parametrize("bad", ["yes", 1, 0])
def test_bad_malloc_tuning_values_are_refused_with_the_key_name(bad):
    with pytest.raises(ValueError, match="malloc_tuning"):
        set_malloc_tuning(bad)


def test_lightning_tips_are_dropped_and_its_other_messages_kept():
    """Lightning's `💡 Tip: ... litlogger` lines leave the log once a run applies its settings
    (a whole run's output: tests/test_train.py)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        quiet_lightning_tips()
        quiet_lightning_tips()  # idempotent
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["GPU available: False, used: False"]
