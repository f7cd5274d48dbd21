"""Running an entry point's task: failures reported in one line, loggers always closed."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from segsuite.launch import in_multirun, job_scoped_distributed_env
from segsuite.utils.failures import FAILURE_FILE, report_failure
from segsuite.utils.instantiate import close_loggers

T = TypeVar("T")


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig, log: Any) -> T | None:
    """Run `task(cfg)`; always close loggers.

    A failing single run prints one short message (what, where, what to do) and exits with 1; the
    traceback goes to `<run dir>/FAILED` (or, with `HYDRA_FULL_ERROR=1`, to the console). A run
    that failed before writing a checkpoint leaves no run directory behind. A job of a multirun
    (sweep) logs the failure, writes `FAILED` and returns None, so the other jobs still run.
    """
    try:
        with job_scoped_distributed_env():
            return task(cfg)
    except Exception as err:
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        if in_multirun():
            log.exception("run failed; its outputs are in %s", output_dir)
            Path(output_dir, FAILURE_FILE).write_text(traceback.format_exc())
            print(f"job failed (sweep continues); traceback in {Path(output_dir, FAILURE_FILE)}", file=sys.stderr)
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_failure(err, output_dir, traceback.format_exc())
        sys.exit(1)
    finally:
        close_loggers()
