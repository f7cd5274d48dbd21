"""Per-class IoU and accuracy as a table (W&B Table; Markdown text in TensorBoard)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from segsuite.callbacks.confusion import ConfusionCallback
from segsuite.callbacks.targets import tensorboard_loggers, wandb_loggers
from segsuite.metrics import scores_from_confusion


class IoUTableLogger(ConfusionCallback):
    """Logs `<stage>/iou_table` (class, IoU, accuracy, ground-truth pixels) every validation
    epoch and at test time, computed from the rank-reduced confusion matrix. NaN: class absent."""

    def log_confusion(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str,
                      confmat: torch.Tensor) -> None:
        scores = scores_from_confusion(confmat)
        rows = [[name, float(iou), float(acc), int(pixels)] for name, iou, acc, pixels in
                zip(pl_module.class_names, scores["iou_per_class"].tolist(), scores["acc_per_class"].tolist(),
                    confmat.sum(dim=1).tolist())]
        columns = ["class", "IoU", "accuracy", "gt_pixels"]
        for logger in wandb_loggers(trainer):
            import wandb

            table = wandb.Table(columns=columns, data=rows)
            logger.log_metrics({f"{stage}/iou_table": table}, step=trainer.global_step)
        for logger in tensorboard_loggers(trainer):
            text = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n" + "\n".join(
                f"| {r[0]} | {_fmt(r[1])} | {_fmt(r[2])} | {r[3]} |" for r in rows)
            logger.experiment.add_text(f"{stage}/iou_table", text, global_step=trainer.global_step)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
