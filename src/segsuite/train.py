"""Training entry point: `python -m segsuite.train [overrides]` (also `segsuite-train`).

Seeds, builds datamodule -> model -> loss -> module -> callbacks -> loggers -> trainer from the
config, fits, tests the best checkpoint, prints the run directory and the final metrics, and
returns the optimised metric (for Hydra sweepers such as Optuna).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsuite.losses.class_weights import has_auto_weights, resolve_auto_weights
from segsuite.utils.config import check_required, print_config_tree, save_resolved
from segsuite.utils.instantiate import close_loggers, instantiate_callbacks, instantiate_loggers
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers

register_resolvers()
from segsuite.utils.reporting import format_scores

log = logging.getLogger("segsuite.train")


def build_components(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Instantiate the datamodule and the LightningModule described by `cfg`."""
    datamodule = instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)
    net = instantiate(cfg.model)
    loss_cfg = cfg.loss
    if has_auto_weights(loss_cfg):
        loss_cfg = resolve_auto_weights(
            loss_cfg, datamodule.build_dataset("train"), Path(cfg.paths.data_dir) / ".segsuite_cache",
            method=cfg.class_weights_method,
        )
    criterion = instantiate(loss_cfg)
    if hasattr(criterion, "target_fn"):
        datamodule.target_fn = criterion.target_fn
    module = instantiate(
        cfg.module,
        net=net,
        criterion=criterion,
        optimizer=instantiate(cfg.optimizer.factory),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        lr=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.weight_decay,
        backbone_lr_mult=cfg.optimizer.get("backbone_lr_mult", 1.0),
        class_names=datamodule.class_names,
    )
    module.run_info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "class_names": list(datamodule.class_names),
        "palette": datamodule.palette.tolist(),
        "mean": list(cfg.dataset.mean),
        "std": list(cfg.dataset.std),
        "num_classes": int(cfg.dataset.num_classes),
        "ignore_index": int(cfg.dataset.ignore_index),
    }
    return datamodule, module


def _check_ckpt(path: str | None) -> None:
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as configured; return all logged metrics (floats)."""
    check_required(cfg)
    _check_ckpt(cfg.get("ckpt_path"))
    output_dir = Path(cfg.paths.output_dir)
    if (output_dir / "checkpoints").exists() and any((output_dir / "checkpoints").iterdir()):
        raise FileExistsError(f"{output_dir} already holds checkpoints of another run; refusing to overwrite them")
    pl.seed_everything(cfg.seed, workers=True)

    datamodule, module = build_components(cfg)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    run_facts = {"global_batch_size": int(cfg.data.batch_size) * int(trainer.accumulate_grad_batches),
                 "world_size": trainer.world_size, "seed": cfg.seed}
    if trainer.is_global_zero:
        if cfg.get("print_config"):
            print_config_tree(cfg, save_to=output_dir / "config_tree.log")
        save_resolved(cfg, output_dir / "config.yaml")
        (output_dir / "run_facts.json").write_text(json.dumps(run_facts, indent=2))
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "run": run_facts})

    metrics: dict[str, Any] = {}
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_floats(trainer.callback_metrics))
        val_scores = getattr(module, "last_val_scores", None)
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update(_floats(trainer.callback_metrics))

    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if cfg.get("train") and val_scores is not None:
            print(format_scores("Final validation metrics", val_scores, module.class_names))
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        print(f"val/mIoU_best: {metrics.get('val/mIoU_best', float('nan')):.4f}")
        if best:
            print(f"best checkpoint: {best}")
        print(f"run directory: {output_dir.resolve()}")
    return metrics


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def run_task(task, cfg: DictConfig) -> dict[str, Any]:
    """Run `task(cfg)`; log failures with the output directory; always close loggers."""
    try:
        return task(cfg)
    except Exception:
        log.exception("run failed; its outputs are in %s", HydraConfig.get().runtime.output_dir)
        raise
    finally:
        close_loggers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers."""
    metrics = run_task(train, cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%s was not logged (logged: %s); returning None", name, sorted(metrics))
        return None
    value = metrics[name]
    return None if math.isnan(value) else value


if __name__ == "__main__":
    main()
