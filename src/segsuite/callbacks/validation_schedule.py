"""Validate sparsely early in training and densely late, where the best checkpoint is chosen."""

from __future__ import annotations

import pytorch_lightning as pl


class ValidationSchedule(pl.Callback):
    """Validate every `every_n_epochs` epochs until `dense_from` (a fraction of `max_epochs`), then after
    every epoch. The last epoch is always validated.

    Early validations only draw the learning curve (the weights keep improving while the learning rate
    is high); late ones choose the checkpoint. On CamVid with ENet a validation costs about 6% of an
    epoch, so validating every 5th epoch over the first 60% saves about 3% of a run
    (docs/benchmarks.md, "Time to accuracy").

    Args:
        every_n_epochs: the interval between validations before `dense_from`; None leaves the schedule to
            `trainer.check_val_every_n_epoch` (the default config: the callback does nothing).
        dense_from: from this fraction of `trainer.max_epochs` on, validate after every epoch.
    """

    def __init__(self, every_n_epochs: int | None = 5, dense_from: float = 0.5) -> None:
        if every_n_epochs is not None and (isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int)
                                           or every_n_epochs < 1):
            raise ValueError(f"ValidationSchedule: every_n_epochs={every_n_epochs!r}, expected an integer >= 1 or null")
        if not 0.0 <= float(dense_from) <= 1.0:
            raise ValueError(f"ValidationSchedule: dense_from={dense_from!r}, expected a fraction in [0, 1]")
        self.every_n_epochs = every_n_epochs
        self.dense_from = float(dense_from)

    def validates_after(self, epoch: int, max_epochs: int) -> bool:
        """Whether epoch `epoch` (0-based) of `max_epochs` ends with a validation."""
        return (self.every_n_epochs is None or epoch + 1 >= max_epochs or epoch + 1 > self.dense_from * max_epochs
                or (epoch + 1) % self.every_n_epochs == 0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # off, or a step-based run (Lightning's own interval)
        if self.every_n_epochs is None or trainer.max_epochs is None or trainer.max_epochs < 0:
            return
        # Lightning validates at an epoch's end when (epoch + 1) % check_val_every_n_epoch == 0
        trainer.check_val_every_n_epoch = 1 if self.validates_after(trainer.current_epoch, trainer.max_epochs) \
            else trainer.current_epoch + 2
