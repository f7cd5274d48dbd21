"""Hydra callbacks of the entry points."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RefuseUsedRunDir(Callback):
    """Refuse `hydra.run.dir=<a directory with checkpoints>` before Hydra writes anything there.

    Hydra saves `.hydra/*.yaml` before the task starts, so a check inside the task would come too
    late: the old run's records would already be overwritten. Resuming writes a new run directory
    (`ckpt_path=<old run>/checkpoints/last.ckpt`) that names the one it came from.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.get("output_subdir") is None:  # DDP child processes: the run's own directory
            return
        run_dir = Path(str(config.hydra.run.dir))
        checkpoints = run_dir / "checkpoints"
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            # Hydra turns a callback's exceptions into warnings and goes on: stop the process instead
            print(f"error: hydra.run.dir={run_dir} holds the checkpoints of another run; a run never writes into "
                  f"another's directory. To continue that run, leave hydra.run.dir out and pass "
                  f"ckpt_path={checkpoints / 'last.ckpt'}", file=sys.stderr, flush=True)
            raise SystemExit(1)
