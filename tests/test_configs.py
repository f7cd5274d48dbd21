"""Every shipped config composes; every model and loss config builds; every dataset trains one
fast-dev-run batch (on a miniature tree where it reads files). What is tested is what the catalog
lists, so a new config is tested the moment it lands in conf/ (tests/test_catalog.py checks that)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite import catalog
from segsuite.train import train
from support.dataset_trees import tree_builder, tree_overrides

# groups whose options are selected as `group=option` on the train config
TRAIN_GROUPS = ["dataset", "augmentation", "data", "model", "loss", "optimizer", "scheduler", "module",
                "trainer", "callbacks", "logger", "paths", "debug"]
MODELS = catalog.model_names()
LOSSES = catalog.config_names("loss")
DATASETS = catalog.config_names("dataset")


def _options(group: str) -> list[str]:
    return catalog.config_names(group)


@pytest.mark.parametrize("group, option", [(g, o) for g in TRAIN_GROUPS for o in _options(g)])
def test_every_group_option_composes(compose_cfg, group, option):
    extra = tree_overrides(option) if group == "dataset" else []
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


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_builds(name):
    """`model=<name>` as shipped builds its class (on the meta device: no memory, no download)."""
    cfg = OmegaConf.create({"dataset": {"num_classes": 5}, "model": catalog.model_config(name)})
    with torch.device("meta"):
        net = instantiate(cfg.model)
    assert isinstance(net, catalog.config_class("model", name)) and net.num_classes == 5


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_config_builds(name):
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": catalog.group_config("loss", name)})
    assert isinstance(instantiate(cfg.loss), catalog.loss_class(name))


@pytest.mark.parametrize("dataset", DATASETS)
def test_train_fast_dev_run_on_each_dataset(compose_cfg, tmp_path, dataset):
    builder = tree_builder(dataset)
    assert builder is not None or not catalog.needs_files(dataset), f"{dataset}: no miniature tree"
    root = [f"dataset.root={builder(tmp_path / 'data')}"] if builder else []
    overrides = [f"dataset={dataset}", *root, f"paths.output_dir={tmp_path / 'run'}",
                 *TINY_INPROCESS, *tree_overrides(dataset)]
    cfg = compose_cfg("train", overrides)
    metrics = train(cfg)
    assert "val/mIoU" in metrics and "test/mIoU" in metrics
    assert 0.0 <= metrics["val/mIoU"] <= 1.0
    assert (Path(tmp_path / "run") / "config.yaml").is_file()


@pytest.mark.parametrize("optimizer", _options("optimizer"))
@pytest.mark.parametrize("scheduler", _options("scheduler"))
def test_every_optimizer_and_schedule_instantiates_and_trains(compose_cfg, optimizer, scheduler):
    """Each optimizer config builds through the module's parameter groups and each schedule steps it:
    the loss of a least-squares fit falls, and the schedule ends below its peak learning rate."""
    import torch
    from hydra.utils import instantiate

    from segsuite.optim import build_optimizer

    cfg = compose_cfg("train", [f"optimizer={optimizer}", f"scheduler={scheduler}"])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1))
    opt = build_optimizer(instantiate(cfg.optimizer.factory), net, cfg.optimizer.lr, cfg.optimizer.weight_decay, 1.0)
    sched = instantiate(cfg.scheduler)(opt, total_steps=40)
    x, y = torch.randn(8, 3, 4, 4), torch.randn(8, 1, 4, 4)
    losses, lrs = [], []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(opt.param_groups[0]["lr"])
    assert losses[-1] < losses[0]
    assert lrs[-1] < max(lrs) and all(lr >= 0 for lr in lrs)


@pytest.mark.parametrize("debug", [None, *_options("debug")])
def test_every_callback_set_instantiates(compose_cfg, tmp_path, debug):
    from segsuite.utils.instantiate import instantiate_callbacks

    cfg = compose_cfg("train", [f"paths.output_dir={tmp_path}", *([f"debug={debug}"] if debug else [])])
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    assert len(callbacks) == len([k for k, v in (cfg.get("callbacks") or {}).items() if v is not None])
