"""`torch_threads` and `float32_matmul_precision`: what a run sets before training, and their validation."""

from __future__ import annotations

import pytest
import torch

from segsuite.train import train
from segsuite.utils.threads import set_matmul_precision, set_torch_threads
from test_configs import TINY_INPROCESS


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
