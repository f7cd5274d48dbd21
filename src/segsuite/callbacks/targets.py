"""Which of the trainer's loggers a visual callback can write to, and when it is due."""

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


class ValidationCounter:
    """Counts validation epochs (sanity checks excluded) for a callback that acts on every n-th.

    `due(trainer)` is called once per validation epoch end; it is True for the 1st, (n+1)-th, ...
    """

    def __init__(self, every_n_epochs: int, owner: str) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1 for {owner}, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.validations = 0

    def due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        self.validations += 1
        return (self.validations - 1) % self.every_n_epochs == 0
