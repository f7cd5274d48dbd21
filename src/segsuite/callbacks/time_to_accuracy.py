"""Time to accuracy: the wall time at which validation first reached each of a few levels."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from segsuite.utils.safe_io import atomic_write_text

log = logging.getLogger(__name__)


def process_start_time() -> float:
    """When this process started (Unix time), read from /proc on Linux; elsewhere the time of this call."""
    try:
        ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class TimeToAccuracy(pl.Callback):
    """Records, after every validation, when `monitor` first reached each of `levels`, in seconds since
    the training process started (data checks, class-weight counting and compilation included), and
    writes them to `<dirpath>/time_to_accuracy.json`; the last line of a run names them.

    A resumed run continues the clock of the run it resumes (the time between the two is not counted),
    so "how long to X?" has one answer per training, however many processes it took.

    Args:
        levels: the thresholds, as fractions (0.5 = 50% mIoU).
        monitor: the logged validation metric.
        dirpath: the folder of the record (the run directory); None: the trainer's default_root_dir.
    """

    def __init__(self, levels: Sequence[float] = (0.4, 0.5, 0.55, 0.6, 0.65), monitor: str = "val/mIoU",
                 dirpath: str | None = None) -> None:
        if not levels or any(not 0 < float(level) <= 1 for level in levels):
            raise ValueError(f"TimeToAccuracy: levels={list(levels)!r}, expected fractions in (0, 1]")
        self.levels = sorted(float(level) for level in levels)
        self.monitor = monitor
        self.dirpath = dirpath
        self.start = process_start_time()
        self.offset = 0.0  # seconds a resumed run had trained before this process
        self.reached: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        return self.offset + time.time() - self.start

    def _path(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or trainer.default_root_dir) / "time_to_accuracy.json"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if math.isnan(value):
            return
        now = {"seconds": round(self.elapsed(), 1), "epoch": trainer.current_epoch, "step": trainer.global_step}
        self.history.append({**now, "value": value})
        for level in self.levels:
            if value >= level and f"{level:g}" not in self.reached:
                self.reached[f"{level:g}"] = {**now, "value": value}
        if trainer.is_global_zero:
            record = {"monitor": self.monitor, "clock": "seconds since the training process started",
                      "levels": {f"{level:g}": self.reached.get(f"{level:g}") for level in self.levels},
                      "validations": self.history}
            atomic_write_text(self._path(trainer), json.dumps(record, indent=1) + "\n")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.history:
            parts = [f"{100 * level:g}% {_clock(self.reached[f'{level:g}']['seconds'])} "
                     f"(epoch {self.reached[f'{level:g}']['epoch'] + 1})" if f"{level:g}" in self.reached
                     else f"{100 * level:g}% not reached" for level in self.levels]
            log.info("time to %s (h:mm:ss since start): %s; %s", self.monitor, ", ".join(parts),
                     self._path(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "reached": self.reached, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.offset = float(state_dict["elapsed"])
        self.reached = dict(state_dict["reached"])
        self.history = list(state_dict["history"])
