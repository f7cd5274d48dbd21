"""Assembly: a config (or a checkpoint) in, datamodule, module and trainer out.

The one place that knows how the parts fit: the loss's extra targets go to the datamodule, the
run manifest and the inferencer to the module, all as constructor arguments. The entry points
(`segsuite.train`, `segsuite.evaluate`) only call these builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segsuite.checkpoint import build_net as build_net_from_checkpoint
from segsuite.checkpoint import check_same_model, load_checkpoint, load_net_weights, run_config, stored_model_config
from segsuite.data.datamodule import SegDataModule
from segsuite.data.datasets.base import SegDataset
from segsuite.inference import Inferencer, build_inferencer
from segsuite.losses.class_weights import has_auto_weights, resolve_run_class_weights
from segsuite.manifest import RunManifest
from segsuite.module import SegmentationModule
from segsuite.preflight import splits_used
from segsuite.run_records import skipped_facts
from segsuite.utils.instantiate import instantiate_callbacks, instantiate_loggers
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.safe_io import AtomicCheckpointIO

register_resolvers()  # the configs built here use segsuite's resolvers


def build_datamodule(cfg: DictConfig, target_fn: Any = None) -> SegDataModule:
    """The datamodule of `cfg.data` over `cfg.dataset` with `cfg.augmentation`'s pipelines."""
    return instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, target_fn=target_fn,
                       _recursive_=False)


def build_criterion(cfg: DictConfig, train_split: SegDataset | None = None) -> nn.Module:
    """The loss of `cfg.loss`. With `class_weights=auto` (or a loss `weight: auto`), its class weights are those
    of `train_split`, the training split as the data check kept it, without transforms
    (`SegDataModule.raw_dataset("train")`), by `class_weights_method`, cached; they are written into `cfg`."""
    if has_auto_weights(cfg.loss):
        if train_split is None:
            raise ValueError("class_weights=auto counts the classes of the training split: pass it (train_split=)")
        cache_dir = Path(cfg.data.get("cache_dir") or Path(cfg.paths.data_dir) / ".segsuite_cache")
        resolve_run_class_weights(cfg, train_split, cache_dir)
    return instantiate(cfg.loss)


def build_net(cfg: DictConfig) -> nn.Module:
    """The network of `cfg.model`; with `init_from=<checkpoint>`, that checkpoint's weights (strictly)."""
    net = instantiate(cfg.model)
    if cfg.get("init_from"):
        load_net_weights(net, load_checkpoint(cfg.init_from, key="init_from"), cfg.model,
                         source=f"init_from={cfg.init_from}")
    return net


def build_module(cfg: DictConfig, net: nn.Module, criterion: nn.Module, class_names: Sequence[str],
                 manifest: RunManifest | None = None, inference: Inferencer | None = None,
                 **overrides: Any) -> SegmentationModule:
    """The LightningModule of `cfg.module` around `net` and `criterion`, with `cfg.optimizer` and
    `cfg.scheduler` (an evaluation config without them gets neither); `overrides` replace constructor arguments."""
    optimizer = cfg.get("optimizer")
    module = instantiate(cfg.module, _partial_=True)  # objects below are passed as they are, not as configs
    arguments = {
        "net": net, "criterion": criterion,
        "optimizer": instantiate(optimizer.factory) if optimizer else None,
        "scheduler": instantiate(cfg.scheduler) if optimizer and cfg.get("scheduler") else None,
        "lr": optimizer.lr if optimizer else 0.0,
        "weight_decay": optimizer.weight_decay if optimizer else 0.0,
        "backbone_lr_mult": optimizer.get("backbone_lr_mult", 1.0) if optimizer else 1.0,
        "class_names": list(class_names), "run_manifest": manifest, "inference": inference,
        "boundary_metric": bool(OmegaConf.select(cfg, "metrics.boundary", default=False)),
    }
    return module(**{**arguments, **overrides})


def _checked_data(cfg: DictConfig, check: Sequence[str]) -> tuple[nn.Module, SegDataModule]:
    """The datamodule, the splits in `check` checked (and the train split, when the class weights come from
    it), then the loss (weighted by that checked split) and its extra targets handed to the datamodule."""
    datamodule = build_datamodule(cfg)
    weighted = has_auto_weights(cfg.loss)
    datamodule.check_splits(list(dict.fromkeys([*check, *(["train"] if weighted else [])])))
    criterion = build_criterion(cfg, datamodule.raw_dataset("train") if weighted else None)
    datamodule.set_target_fn(getattr(criterion, "target_fn", None))
    return criterion, datamodule


def build_components(cfg: DictConfig, check: Sequence[str] = ()) -> tuple[SegDataModule, SegmentationModule]:
    """The datamodule and module of a training run of `cfg`.

    The splits named in `check` are built and their files checked first (`data.verify`), so bad
    data fails (or is left out, `data.skip_bad`) before anything trains on it.
    """
    criterion, datamodule = _checked_data(cfg, check)
    manifest = RunManifest.from_config(cfg, datamodule.class_names, datamodule.palette.tolist())
    return datamodule, build_module(cfg, build_net(cfg), criterion, datamodule.class_names, manifest)


@dataclass
class TrainingRun:
    """Everything `segsuite.train` fits and tests."""

    datamodule: SegDataModule
    module: SegmentationModule
    trainer: pl.Trainer
    loggers: list = field(default_factory=list)

    @property
    def facts(self) -> dict[str, Any]:
        """The run's facts (run_facts.json), as its checkpoints store them."""
        return self.module.run_manifest.run_facts


def run_facts(cfg: DictConfig, trainer: pl.Trainer, datamodule: SegDataModule,
              resumed: dict[str, Any] | None) -> dict[str, Any]:
    """Batch sizes, world size, precision, seed and data-check outcome of the run (run_facts.json)."""
    facts = {"global_batch_size": int(cfg.data.batch_size) * int(trainer.accumulate_grad_batches),
             "per_device_batch_size": int(cfg.data.batch_size) // max(trainer.world_size, 1),
             "world_size": trainer.world_size, "precision": str(trainer.precision), "seed": cfg.seed,
             "data_verify": str(cfg.data.get("verify", "off")),
             "skipped_bad_samples": skipped_facts(datamodule.skipped)}
    if resumed:
        facts["resumed_from"] = resumed
    return facts


def build_training(cfg: DictConfig, resumed: dict[str, Any] | None = None) -> TrainingRun:
    """Loss and datamodule (every split the run uses checked first), network, callbacks, loggers,
    trainer, and the module holding the run manifest."""
    criterion, datamodule = _checked_data(cfg, splits_used(cfg))
    net = build_net(cfg)
    loggers = instantiate_loggers(cfg.get("logger"))
    # every checkpoint written atomically (temp file, fsync, rename): a fault leaves the previous good one
    plugins = instantiate(cfg.trainer.get("plugins"), _convert_="all") or []
    plugins = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg.get("callbacks")),
                                      logger=loggers or False, plugins=plugins)
    if cfg.get("train"):  # before step 0: a batch larger than the split would train nothing
        datamodule.check_train_batches(trainer.world_size)
    manifest = RunManifest.from_config(cfg, datamodule.class_names, datamodule.palette.tolist(),
                                       run_facts(cfg, trainer, datamodule, resumed))
    return TrainingRun(datamodule, build_module(cfg, net, criterion, datamodule.class_names, manifest),
                       trainer, loggers)


# -- from a checkpoint ----------------------------------------------------------------------------------
def stored_run_config(cfg: DictConfig, ckpt: dict[str, Any]) -> DictConfig:
    """The checkpoint's training config with the dataset, data root and batch size given in `cfg`
    (an evaluate config) in place of the stored ones."""
    train_cfg = run_config(ckpt)
    dataset = cfg.get("dataset") or {}
    root = cfg.get("data_root") or dataset.get("root")
    if "num_classes" in dataset:  # a whole dataset group (`dataset=<name>`) replaces the stored one
        stored = stored_model_config(ckpt)
        check_same_model(stored, {**stored, "num_classes": dataset.num_classes}, "the checkpoint",
                         builds=f"dataset '{dataset.get('name')}' needs", hint="use a checkpoint trained on this "
                         "dataset, or evaluate on the dataset the checkpoint was trained on")
        train_cfg.dataset = dataset
    if root:
        train_cfg.dataset.root = root
        for split in ("train", "val", "test"):
            if train_cfg.dataset.get(split) and "root" in train_cfg.dataset[split]:
                train_cfg.dataset[split].root = root
    if cfg.get("batch_size"):
        train_cfg.data.val_batch_size = cfg.batch_size
    if cfg.get("save_predictions"):  # every prediction is written at its image's own size: no padded batches
        train_cfg.data.val_batch_size = 1
    train_cfg.data.num_workers = cfg.num_workers
    if cfg.get("metrics") is not None:  # what is scored is evaluate's choice (metrics.boundary), not the run's
        train_cfg.metrics = cfg.metrics
    for key in ("verify", "skip_bad", "cache_dir"):  # the split is checked as this command asks, not as training did
        if cfg.get("data") and key in cfg.data:
            train_cfg.data[key] = cfg.data[key]
    return train_cfg


def build_evaluation(cfg: DictConfig, ckpt: dict[str, Any]) -> tuple[SegDataModule, SegmentationModule]:
    """The datamodule and module that score checkpoint `ckpt` as `cfg` (an evaluate config) asks:
    its stored model, loss and pipelines, predicting with `cfg.tta`; `cfg.split` checked as training checks it."""
    train_cfg = stored_run_config(cfg, ckpt)
    manifest = RunManifest.from_checkpoint(ckpt)
    train_cfg.optimizer = None
    criterion = build_criterion(train_cfg)
    module = build_module(train_cfg, build_net_from_checkpoint(ckpt), criterion, manifest.class_names, manifest,
                          inference=build_inferencer(cfg.tta, train_cfg.dataset.get("crop_size")))
    datamodule = build_datamodule(train_cfg, target_fn=getattr(criterion, "target_fn", None))
    datamodule.check_splits([cfg.split], task="evaluating")  # as training checks its splits (data.skip_bad)
    return datamodule, module


def module_from_checkpoint(checkpoint: str | Path, map_location: Any = None, strict: bool | None = None,
                           **overrides: Any) -> SegmentationModule:
    """`SegmentationModule.load_from_checkpoint`: the module a segsuite checkpoint (a file or a zoo name) was
    saved from, rebuilt from the run manifest it stores (model, loss, optimizer and schedule, classes), with all
    its weights. The network's weights load strictly; the rest of the state strictly when `strict=True`.
    `overrides` replace constructor arguments (e.g. `inference=Inferencer(flip=True)`); `map_location` is a device."""
    ckpt = load_checkpoint(checkpoint, key="checkpoint_path")
    train_cfg = run_config(ckpt)
    manifest = RunManifest.from_checkpoint(ckpt)
    module = build_module(train_cfg, build_net_from_checkpoint(ckpt), build_criterion(train_cfg),
                          manifest.class_names, manifest, **overrides)
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=bool(strict))  # net.* already loaded strictly above
    return module if map_location is None else module.to(map_location)
