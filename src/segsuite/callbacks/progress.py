"""Plain progress lines for logs that are not a terminal (nohup, SLURM, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl
import torch


def is_terminal() -> bool:
    """True when both stdout and stderr are terminals (a progress bar is then readable)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class PlainProgress(pl.Callback):
    """One line every `every_n_seconds` of training (epoch, step, loss, images/s, ETA) and one line
    per validation with its metrics, printed where a progress bar cannot be read.

    Args:
        every_n_seconds: the interval between training lines.
        when: `auto` (only when stdout or stderr is not a terminal), `always` or `never`.
        stream: where the lines go (default: stdout).
    """

    def __init__(self, every_n_seconds: float = 30.0, when: str = "auto", stream: TextIO | None = None) -> None:
        if when not in ("auto", "always", "never"):
            raise ValueError(f"PlainProgress: when={when!r}, expected auto, always or never")
        self.every_n_seconds = float(every_n_seconds)
        self.enabled = when == "always" or (when == "auto" and not is_terminal())
        self.stream = stream
        self._start = self._last = 0.0
        self._start_step = 0
        self._images = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step
        self._images = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        image = batch["image"] if isinstance(batch, dict) else batch[0]
        self._images += int(image.shape[0]) * trainer.world_size
        now = time.monotonic()
        if now - self._last < self.every_n_seconds:
            return
        self._last = now
        elapsed = now - self._start
        done = trainer.global_step - self._start_step
        total = trainer.estimated_stepping_batches
        eta = (total - trainer.global_step) * elapsed / max(done, 1)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss_text = f"{float(loss):.4f}" if isinstance(loss, torch.Tensor) else "n/a"
        self._print(
            f"[progress] epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
            f"step {trainer.global_step}/{total} loss {loss_text} "
            f"{self._images / max(elapsed, 1e-9):.1f} img/s elapsed {_duration(elapsed)} eta {_duration(eta)}"
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero or trainer.sanity_checking:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("val/") and "/IoU/" not in k and "/Acc/" not in k and torch.as_tensor(v).numel() == 1}
        text = " ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))
        self._print(f"[validation] epoch {trainer.current_epoch + 1} step {trainer.global_step} {text}")
