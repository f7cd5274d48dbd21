"""The validation/test confusion matrix, reduced over all ranks, as a W&B chart and a heatmap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from segsuite.callbacks.targets import (
    ValidationCounter,
    tensorboard_loggers,
    visual_loggers,
    wandb_loggers,
)
from segsuite.metrics import SegmentationMetrics


def reduced_confusion_matrix(metric: SegmentationMetrics) -> torch.Tensor:
    """The metric's confusion matrix summed over all DDP ranks (a collective: call on every rank)."""
    with metric.sync_context(should_sync=True, should_unsync=True):
        return metric.confmat.detach().clone().cpu()


def stage_metric(pl_module: pl.LightningModule, stage: str) -> SegmentationMetrics:
    """The module's metric object of `stage` (`val` or `test`)."""
    metric = getattr(pl_module, f"{stage}_metrics", None)
    if not isinstance(metric, SegmentationMetrics):
        raise AttributeError(  # noqa: TRY004 - a missing attribute, not a wrongly typed argument
            f"{type(pl_module).__name__} has no SegmentationMetrics `{stage}_metrics`")
    return metric


def confusion_figure(confmat: np.ndarray, class_names: Sequence[str], title: str):
    """A row-normalised (recall) heatmap of `confmat` with class names on both axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = confmat.sum(axis=1, keepdims=True)
    recall = np.divide(confmat, rows, out=np.zeros(confmat.shape, dtype=float), where=rows > 0)
    size = min(2.0 + 0.45 * len(class_names), 24.0)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(recall, vmin=0.0, vmax=1.0, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, f"{recall[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if recall[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


class ConfusionCallback(pl.Callback):
    """Base of the callbacks that log something derived from the rank-reduced confusion matrix,
    every `every_n_epochs` validations and (with `log_test`) at test time, for W&B/TensorBoard only.
    Subclasses implement `log_confusion(trainer, pl_module, stage, confmat)` (rank zero only)."""

    def __init__(self, every_n_epochs: int = 1, log_test: bool = True) -> None:
        self.schedule = ValidationCounter(every_n_epochs, type(self).__name__)
        self.log_test = log_test

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.due(trainer):
            self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_test:
            self._log(trainer, pl_module, "test")

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not visual_loggers(trainer):
            return
        confmat = reduced_confusion_matrix(stage_metric(pl_module, stage))  # collective: every rank
        if trainer.is_global_zero:
            self.log_confusion(trainer, pl_module, stage, confmat)

    def log_confusion(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str,
                      confmat: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ConfusionMatrixLogger(ConfusionCallback):
    """Logs the pixel confusion matrix of every validation (and the test) epoch.

    W&B: a confusion-matrix chart (`wandb/confusion_matrix/v1`, pixel counts) under
    `<stage>/confusion_matrix` and a recall heatmap image under `<stage>/confusion_heatmap`.
    TensorBoard: the heatmap as a figure. The matrix is the one the metrics use, summed over ranks.
    """

    def log_confusion(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str,
                      confmat: torch.Tensor) -> None:
        confmat = confmat.numpy()
        names = list(pl_module.class_names)
        fig = confusion_figure(confmat, names, f"{stage} confusion (row-normalised), step {trainer.global_step}")
        for logger in wandb_loggers(trainer):
            import wandb

            table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"],
                                data=[[names[i], names[j], int(confmat[i, j])]
                                      for i in range(len(names)) for j in range(len(names))])
            chart = wandb.plot_table("wandb/confusion_matrix/v1", table,
                                     {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                                     {"title": f"{stage} confusion matrix (pixels)"})
            logger.log_metrics({f"{stage}/confusion_matrix": chart, f"{stage}/confusion_heatmap": wandb.Image(fig)},
                               step=trainer.global_step)
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_figure(f"{stage}/confusion_matrix", fig, global_step=trainer.global_step, close=False)
