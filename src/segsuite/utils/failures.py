"""How a failed run reports itself: one short message on the console, the traceback on disk."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hydra.errors import InstantiationException

from segsuite.utils.run_lock import RUN_LOCK_FILE
from segsuite.utils.safe_io import DiskFullError, atomic_write_text
from segsuite.utils.signals import RunStopped

FAILURE_FILE = "FAILED"
# What a run writes before it trains; a directory holding only these records no work.
_BOOKKEEPING = {".hydra", "train.log", "config.yaml", "config_tree.log", "run_facts.json", "csv", "tensorboard",
                "wandb", "evaluate.log", "predict.log", "export.log",  # the last three: the other entry points' logs
                RUN_LOCK_FILE}
_PLAIN = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
          ImportError, DiskFullError, RunStopped)


def describe_error(err: BaseException) -> str:
    """The error's own message; the exception type only where the message needs it."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__  # the class's own error, not Hydra's wrapper around it
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return str(message) if isinstance(err, _PLAIN) and str(message) else f"{type(err).__name__}: {message}"


def holds_work(run_dir: Path) -> bool:
    """Whether `run_dir` holds anything beyond the records written before training (checkpoints, metrics)."""
    if not run_dir.is_dir():
        return False
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        return True
    return any(entry.name not in _BOOKKEEPING | {"checkpoints"} for entry in run_dir.iterdir())


def report_failure(err: BaseException, run_dir: Path, trace: str) -> None:
    """Print `error: <message>` and where the traceback is; remove `run_dir` if it holds no work."""
    message = describe_error(err)
    if isinstance(err, FileExistsError):  # refused to write into another run's directory: leave it untouched
        where = "set HYDRA_FULL_ERROR=1 for the traceback"
    elif holds_work(run_dir):
        try:
            atomic_write_text(run_dir / FAILURE_FILE, trace)
            where = f"traceback in {run_dir / FAILURE_FILE}"
        except OSError as write_err:  # e.g. the disk that failed the run is still full
            where = f"could not write {run_dir / FAILURE_FILE}: {describe_error(write_err)}"
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        where = "set HYDRA_FULL_ERROR=1 for the traceback"
    print(f"error: {message}\n({where})", file=sys.stderr, flush=True)
