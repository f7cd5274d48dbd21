"""Stopping or breaking a run on purpose: time-boxed jobs, preemption and crash drills."""

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


class FailAtStep(pl.Callback):
    """A crash drill: raise before training step `step` (global), as a crash or Ctrl-C would.

    `kind="crash"` raises RuntimeError; `kind="interrupt"` raises KeyboardInterrupt (Ctrl-C).
    """

    def __init__(self, step: int, kind: str = "crash") -> None:
        if kind not in ("crash", "interrupt"):
            raise ValueError(f"FailAtStep(kind={kind!r}): expected 'crash' or 'interrupt'")
        self.step = step
        self.kind = kind

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            if self.kind == "interrupt":
                raise KeyboardInterrupt
            raise RuntimeError(f"crash drill at step {self.step}")
