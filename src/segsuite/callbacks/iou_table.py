"""Per-class IoU and accuracy as a table (W&B Table; Markdown text in TensorBoard)."""

from __future__ import annotations

import math

import pytorch_lightning as pl

from segsuite.callbacks.confusion import reduced_confusion_matrix, stage_metric
from segsuite.callbacks.targets import tensorboard_loggers, visual_loggers, wandb_loggers
from segsuite.metrics import scores_from_confusion


class IoUTableLogger(pl.Callback):
    """Logs `<stage>/iou_table` (class, IoU, accuracy, ground-truth pixels) every validation
    epoch and at test time, computed from the rank-reduced confusion matrix. NaN: class absent."""

    def __init__(self, every_n_epochs: int = 1, log_test: bool = True) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.iou_table.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.log_test = log_test
        self._validations = 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_epochs == 0:
            self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_test:
            self._log(trainer, pl_module, "test")

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not visual_loggers(trainer):
            return
        confmat = reduced_confusion_matrix(stage_metric(pl_module, stage))
        if not trainer.is_global_zero:
            return
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
