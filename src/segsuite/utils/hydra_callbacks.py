"""Hydra callbacks of the entry points."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from segsuite.utils.run_lock import RunDirInUse, lock_run_dir


def _rank() -> int:
    """This process's rank where a launcher (torchrun, SLURM via Lightning) set one before Hydra ran; else 0."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit() and int(os.environ[key]) > 0:
            return int(os.environ[key])
    return 0


class RefuseUsedRunDir(Callback):
    """Own the run directory (`.run.lock`, held while the run lives; `segsuite.utils.run_lock`) and refuse
    `hydra.run.dir=<a directory in use, or with checkpoints>` before Hydra writes anything there.

    Hydra saves `.hydra/*.yaml` before the task starts, so a check inside the task would come too
    late: the old run's records would already be overwritten. Resuming writes a new run directory
    (`ckpt_path=<old run>/checkpoints/last.ckpt`) that names the one it came from.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.get("output_subdir") is None or _rank() > 0:  # DDP child processes: the run's own directory
            return
        run_dir = Path(str(config.hydra.run.dir))
        try:  # first own the directory: a run started at the same moment with the same hydra.run.dir is refused
            lock_run_dir(run_dir)
        except RunDirInUse as err:
            print(f"error: hydra.run.dir={run_dir} is in use by another run ({err.holder}); two runs never share a "
                  f"directory. Leave hydra.run.dir out (each run gets a new one) or choose another", file=sys.stderr,
                  flush=True)
            raise SystemExit(1) from None
        checkpoints = run_dir / "checkpoints"
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            # Hydra turns a callback's exceptions into warnings and goes on: stop the process instead
            print(f"error: hydra.run.dir={run_dir} holds the checkpoints of another run; a run never writes into "
                  f"another's directory. To continue that run, leave hydra.run.dir out and pass "
                  f"ckpt_path={checkpoints / 'last.ckpt'}", file=sys.stderr, flush=True)
            raise SystemExit(1)
