"""Stopping or breaking a run on purpose: time-boxed jobs, preemption and crash drills."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytorch_lightning as pl


class StopAfterEpochs(pl.Callback):
    """Stop training after `epochs` epochs of *this* invocation, as if the job were preempted.

    The schedule still spans `trainer.max_epochs`, so resuming from `last.ckpt` continues the
    very same run (unlike lowering `max_epochs`, which would change the learning-rate schedule).
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._done = 0
        self._trained = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._trained = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._trained:  # the end of an epoch the resumed checkpoint had trained (saved at its validation)
            return
        self._trained = False
        self._done += 1
        if self._done >= self.epochs:
            trainer.should_stop = True


DISK_FILLER = "DISK_FILLER"


def fill_disk(path: Path, leave: int = 64 * 1024) -> None:
    """Write `path` until its file system has only about `leave` bytes free (a disk-full drill)."""
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as fh:
        while (free := shutil.disk_usage(path.parent).free) > leave:
            fh.write(chunk[: min(len(chunk), free - leave)])
            fh.flush()


class FailAtStep(pl.Callback):
    """A crash drill: break training step `step` (global) as a crash, Ctrl-C or a signal would.

    `kind="crash"` raises RuntimeError; `kind="interrupt"` raises KeyboardInterrupt (Ctrl-C); a signal
    name (`SIGTERM`, `SIGINT`, `SIGHUP`, `SIGUSR1`, ...) sends that signal to the rank-zero process, as a
    scheduler's preemption or `kill` would. `where="start"` breaks in before the step; `where="backward"`
    after its forward pass (the BatchNorm statistics already hold the batch), before the optimizer step.
    `kind="disk_full"` fills the run directory's file system (`fill_disk`) and lets training go on, to
    meet the full disk at the next write (use it on a small file system of its own).
    """

    def __init__(self, step: int, kind: str = "crash", where: str = "start") -> None:
        if kind not in ("crash", "interrupt", "disk_full") and not (kind.startswith("SIG") and hasattr(signal, kind)):
            raise ValueError(f"FailAtStep(kind={kind!r}): expected 'crash', 'interrupt', 'disk_full' or a signal "
                             f"name (SIGTERM)")
        if where not in ("start", "backward"):
            raise ValueError(f"FailAtStep(where={where!r}): expected 'start' or 'backward'")
        self.step = step
        self.kind = kind
        self.where = where

    def _fail(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self.step:
            return
        if self.kind == "interrupt":
            raise KeyboardInterrupt
        if self.kind == "crash":
            raise RuntimeError(f"crash drill at step {self.step}")
        if self.kind == "disk_full":
            if trainer.is_global_zero:
                fill_disk(Path(trainer.default_root_dir) / DISK_FILLER)
            return
        if trainer.is_global_zero:  # as a scheduler signals the main process
            os.kill(os.getpid(), getattr(signal, self.kind))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.where == "start":
            self._fail(trainer)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss) -> None:
        if self.where == "backward":
            self._fail(trainer)
