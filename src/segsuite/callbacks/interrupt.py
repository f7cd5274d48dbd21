"""Stopping a run cleanly after a number of epochs (time-boxed jobs, preemption drills)."""

from __future__ import annotations

import pytorch_lightning as pl


class StopAfterEpochs(pl.Callback):
    """Stop training after `epochs` epochs of *this* invocation, as if the job were preempted.

    The schedule still spans `trainer.max_epochs`, so resuming from `last.ckpt` continues the
    very same run (unlike lowering `max_epochs`, which would change the learning-rate schedule).
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._done = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._done += 1
        if self._done >= self.epochs:
            trainer.should_stop = True
