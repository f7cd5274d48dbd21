"""Running an entry point's task: failures reported in one line, loggers always closed."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from segsuite.launch import in_multirun, job_scoped_distributed_env
from segsuite.utils.failures import FAILURE_FILE, report_failure
from segsuite.utils.instantiate import close_loggers
from segsuite.utils.safe_io import atomic_write_text
from segsuite.utils.signals import RunStopped, stop_on_signals

T = TypeVar("T")


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig, log: Any) -> T | None:
    """Run `task(cfg)`; always close loggers.

    A failing single run prints one short message (what, where, what to do) and exits with 1; the
    traceback goes to `<run dir>/FAILED` (or, with `HYDRA_FULL_ERROR=1`, to the console). A run
    that failed before writing a checkpoint leaves no run directory behind. A job of a multirun
    (sweep) logs the failure, writes `FAILED` and returns None, so the other jobs still run.

    A stop signal (Ctrl-C, SIGTERM, SIGHUP, SIGUSR1/2; `segsuite.utils.signals`) is such a failure too,
    with exit code 128 + the signal number; in a sweep it stops the whole sweep.
    """
    try:
        try:
            with job_scoped_distributed_env(), stop_on_signals():
                return task(cfg)
        except SystemExit as exit_:
            # Lightning's own ways out: `sys.exit(1)` after a KeyboardInterrupt, SIGTERMException (exit 0)
            if isinstance(exit_, SIGTERMException):
                raise RunStopped(signal.SIGTERM) from exit_
            if isinstance(exit_.__context__, KeyboardInterrupt):
                raise RunStopped(signal.SIGINT) from exit_.__context__
            raise
        except KeyboardInterrupt as interrupt:
            raise RunStopped(signal.SIGINT) from interrupt
    except Exception as err:
        code = err.exit_code if isinstance(err, RunStopped) else 1
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        if in_multirun():
            log.exception("run failed; its outputs are in %s", output_dir)
            try:
                atomic_write_text(Path(output_dir, FAILURE_FILE), traceback.format_exc())
            except OSError:
                pass
            if isinstance(err, RunStopped):
                print(f"job {err} (sweep stops); outputs in {output_dir}", file=sys.stderr, flush=True)
                sys.exit(code)
            print(f"job failed (sweep continues); traceback in {Path(output_dir, FAILURE_FILE)}", file=sys.stderr)
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_failure(err, output_dir, traceback.format_exc())
        sys.exit(code)
    finally:
        close_loggers()
