"""Every shipped config composes; every dataset trains one fast-dev-run batch on a tiny tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF
from dataset_trees import BUILDERS, EXTRA_OVERRIDES
from segsuite.train import train

# groups whose options are selected as `group=option` on the train config
TRAIN_GROUPS = ["dataset", "augmentation", "data", "model", "loss", "optimizer", "scheduler", "module",
                "trainer", "callbacks", "logger", "paths", "debug"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in TRAIN_GROUPS for o in _options(g)])
def test_every_group_option_composes(compose_cfg, group, option):
    extra = EXTRA_OVERRIDES.get(option, []) if group == "dataset" else []
    cfg = compose_cfg("train", [f"{group}={option}", *extra])
    if group == "debug":  # a global overlay
        assert cfg.task_name == "debug"
    else:
        assert cfg[group] is not None
    # everything that needs no runtime value resolves
    OmegaConf.to_container(cfg.model, resolve=True)
    OmegaConf.to_container(cfg.loss, resolve=True)


def test_primary_configs_compose(compose_cfg):
    for name in ("train", "evaluate"):
        assert compose_cfg(name, ["ckpt_path=x"] if name == "evaluate" else [])


TINY_INPROCESS = [
    "dataset.crop_size=[32,32]", "model.base_channels=4", "model.depth=2", "data.batch_size=2",
    "data.val_batch_size=2", "data.num_workers=0", "print_config=false", "trainer.enable_progress_bar=false",
    "debug=fdr", "logger=csv",
]


@pytest.mark.parametrize("dataset", sorted(BUILDERS))
def test_train_fast_dev_run_on_each_dataset(compose_cfg, tmp_path, dataset):
    root = BUILDERS[dataset](tmp_path / "data")
    overrides = [f"dataset={dataset}", f"dataset.root={root}", f"paths.output_dir={tmp_path / 'run'}",
                 *TINY_INPROCESS, *EXTRA_OVERRIDES.get(dataset, [])]
    cfg = compose_cfg("train", overrides)
    metrics = train(cfg)
    assert "val/mIoU" in metrics and "test/mIoU" in metrics
    assert 0.0 <= metrics["val/mIoU"] <= 1.0
    assert (Path(tmp_path / "run") / "config.yaml").is_file()
