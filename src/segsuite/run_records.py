"""What a training run writes and prints about itself: its config and facts at the start, its
metrics and the best epoch's table at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from segsuite.module import SegmentationModule
from segsuite.utils.config import print_config_tree, save_resolved
from segsuite.utils.reporting import format_scores


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The single-number entries of Lightning's `callback_metrics`, as floats."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def record_start(cfg: DictConfig, output_dir: Path, facts: dict[str, Any], loggers: list) -> None:
    """`config.yaml`, `run_facts.json` (and the printed config tree) in the run directory; the config
    and facts as every logger's hyperparameters."""
    if cfg.get("print_config"):
        print_config_tree(cfg, save_to=output_dir / "config_tree.log")
    save_resolved(cfg, output_dir / "config.yaml")
    (output_dir / "run_facts.json").write_text(json.dumps(facts, indent=2))
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "run": facts})


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The path of the best checkpoint saved so far ('' if none)."""
    return trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""


def record_end(trainer: pl.Trainer, module: SegmentationModule, metrics: dict[str, float], output_dir: Path,
               trained: bool) -> None:
    """`metrics.json`, then the best epoch's validation table, the best checkpoint and the run directory."""
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if trained and module.best_val is not None:
        epoch, scores = module.best_val
        print(format_scores(f"Validation metrics of the best epoch ({epoch + 1}, checkpoint best.ckpt)", scores,
                            module.class_names))
    print(f"val/mIoU_best: {metrics.get('val/mIoU_best', float('nan')):.4f}")
    if best_checkpoint(trainer):
        print(f"best checkpoint: {best_checkpoint(trainer)}")
    print(f"run directory: {output_dir.resolve()}")
