"""Which of the trainer's loggers a visual callback can write to."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger


def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers."""
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    """The trainer's TensorBoard loggers."""
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def visual_loggers(trainer: pl.Trainer) -> list[Logger]:
    """Loggers that take media (W&B, TensorBoard). The same on every rank, so a callback can
    decide on collective operations from it; only rank zero writes."""
    return [*wandb_loggers(trainer), *tensorboard_loggers(trainer)]
