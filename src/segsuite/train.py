"""Training entry point: `python -m segsuite.train [overrides]` (also `segsuite-train`).

Checks the config, seeds, builds the run (`segsuite.build`), fits, tests the best checkpoint,
prints the run directory and the final metrics, and returns the optimised metric (for Hydra
sweepers such as Optuna).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from segsuite.build import build_training
from segsuite.launch import group_sweep_runs, use_job_command_for_ddp_children
from segsuite.preflight import check_config_values, check_run_paths, load_resume_checkpoint
from segsuite.run_records import record_end, record_start, scalar_metrics, selected_checkpoint
from segsuite.utils.config import check_required
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.runtime import apply_runtime_settings
from segsuite.utils.task_wrapper import run_task

register_resolvers()
log = logging.getLogger("segsuite.train")


def train(cfg: DictConfig) -> dict[str, float]:
    """Check, fit and test as configured; return all logged metrics (floats)."""
    check_required(cfg)
    check_config_values(cfg)
    apply_runtime_settings(cfg)
    resumed = load_resume_checkpoint(cfg.ckpt_path, cfg) if cfg.get("ckpt_path") else None
    check_run_paths(cfg)
    group_sweep_runs(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run = build_training(cfg, resumed)
    trainer, output_dir = run.trainer, Path(cfg.paths.output_dir)
    if resumed:
        log.info("resuming the run in %s from %s (epoch %d, step %d); its records stay there unchanged",
                 resumed["run_dir"], resumed["ckpt_path"], resumed["epoch"], resumed["global_step"])
    if trainer.is_global_zero:
        record_start(cfg, output_dir, run.facts, run.loggers)

    metrics: dict[str, float] = {}
    if cfg.get("train"):
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=resumed["ckpt_path"] if resumed else None)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    selected = selected_checkpoint(trainer)  # fixed here: testing restores the callbacks from the checkpoint
    if cfg.get("test"):
        if not selected[0]:
            log.warning("no checkpoint was saved; testing the current weights")
        trainer.test(run.module, datamodule=run.datamodule, ckpt_path=selected[0] or None, weights_only=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    skipped = run.datamodule.skipped_everywhere()  # every process calls it: a collective under DDP
    if trainer.is_global_zero:
        record_end(trainer, run.module, metrics, output_dir, bool(cfg.get("train")), selected, skipped)
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers (None if the job failed)."""
    use_job_command_for_ddp_children()
    metrics = run_task(train, cfg, log)
    name = cfg.get("optimized_metric")
    if metrics is None or not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%s was not logged (logged: %s); returning None", name, sorted(metrics))
        return None
    return None if math.isnan(metrics[name]) else metrics[name]


if __name__ == "__main__":
    main()
