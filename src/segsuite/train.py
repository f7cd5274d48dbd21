"""Training entry point: `python -m segsuite.train [overrides]` (also `segsuite-train`).

Seeds, builds datamodule -> model -> loss -> module -> callbacks -> loggers -> trainer from the
config, fits, tests the best checkpoint, prints the run directory and the final metrics, and
returns the optimised metric (for Hydra sweepers such as Optuna).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from segsuite.checkpoint import load_checkpoint, load_net_weights
from segsuite.losses.class_weights import has_auto_weights, resolve_auto_weights
from segsuite.preflight import check_config_values, load_resume_checkpoint, splits_used
from segsuite.utils.config import check_required, print_config_tree, save_resolved
from segsuite.utils.failures import report_failure
from segsuite.utils.instantiate import close_loggers, instantiate_callbacks, instantiate_loggers
from segsuite.utils.paths import config_dir
from segsuite.utils.reporting import format_scores
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.runtime import apply_runtime_settings

register_resolvers()

log = logging.getLogger("segsuite.train")


def build_components(cfg: DictConfig, check: Sequence[str] = ()) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Instantiate the datamodule and the LightningModule described by `cfg`.

    The splits named in `check` are built and their files checked first (`data.verify`), so bad
    data fails (or is left out, `data.skip_bad`) before anything else reads it.
    """
    datamodule = instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)
    datamodule.check_splits(list(check))
    net = instantiate(cfg.model)
    if cfg.get("init_from"):
        load_net_weights(net, load_checkpoint(cfg.init_from, key="init_from"), cfg.model,
                         source=f"init_from={cfg.init_from}")
    loss_cfg = cfg.loss
    if has_auto_weights(loss_cfg):
        cache_dir = Path(cfg.data.get("cache_dir") or Path(cfg.paths.data_dir) / ".segsuite_cache")
        loss_cfg = resolve_auto_weights(
            loss_cfg, datamodule.raw_dataset("train"), cache_dir,
            method=cfg.class_weights_method,
        )
    criterion = instantiate(loss_cfg)
    if hasattr(criterion, "target_fn"):
        datamodule.target_fn = criterion.target_fn
    module = instantiate(
        cfg.module,
        net=net,
        criterion=criterion,
        optimizer=instantiate(cfg.optimizer.factory),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        lr=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.weight_decay,
        backbone_lr_mult=cfg.optimizer.get("backbone_lr_mult", 1.0),
        class_names=datamodule.class_names,
    )
    module.run_info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "class_names": list(datamodule.class_names),
        "palette": datamodule.palette.tolist(),
        "mean": list(cfg.dataset.mean),
        "std": list(cfg.dataset.std),
        "num_classes": int(cfg.dataset.num_classes),
        "ignore_index": int(cfg.dataset.ignore_index),
    }
    return datamodule, module


def _check_ckpt(path: str | None, key: str = "ckpt_path") -> None:
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"{key}={path}: no such checkpoint file")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Check, fit and test as configured; return all logged metrics (floats)."""
    check_required(cfg)
    check_config_values(cfg)
    apply_runtime_settings(cfg)
    resumed = load_resume_checkpoint(cfg.ckpt_path, cfg) if cfg.get("ckpt_path") else None
    _check_ckpt(cfg.get("init_from"), key="init_from")
    _group_sweep_runs(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if (output_dir / "checkpoints").exists() and any((output_dir / "checkpoints").iterdir()):
        raise FileExistsError(f"{output_dir} already holds checkpoints of another run; refusing to overwrite them")
    pl.seed_everything(cfg.seed, workers=True)

    datamodule, module = build_components(cfg, check=splits_used(cfg))
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    run_facts = {"global_batch_size": int(cfg.data.batch_size) * int(trainer.accumulate_grad_batches),
                 "per_device_batch_size": int(cfg.data.batch_size) // max(trainer.world_size, 1),
                 "world_size": trainer.world_size, "precision": str(trainer.precision), "seed": cfg.seed,
                 "data_verify": str(cfg.data.get("verify", "off")), "skipped_bad_samples": dict(datamodule.skipped)}
    if resumed:
        run_facts["resumed_from"] = resumed
        log.info("resuming the run in %s from %s (epoch %d, step %d); its records stay there unchanged",
                 resumed["run_dir"], resumed["ckpt_path"], resumed["epoch"], resumed["global_step"])
    module.run_info["run_facts"] = run_facts
    if trainer.is_global_zero:
        if cfg.get("print_config"):
            print_config_tree(cfg, save_to=output_dir / "config_tree.log")
        save_resolved(cfg, output_dir / "config.yaml")
        (output_dir / "run_facts.json").write_text(json.dumps(run_facts, indent=2))
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "run": run_facts})

    metrics: dict[str, Any] = {}
    if cfg.get("train"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(_floats(trainer.callback_metrics))
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update(_floats(trainer.callback_metrics))

    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if cfg.get("train") and module.best_val is not None:
            epoch, scores = module.best_val
            print(format_scores(f"Validation metrics of the best epoch ({epoch + 1}, checkpoint best.ckpt)", scores,
                                module.class_names))
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        print(f"val/mIoU_best: {metrics.get('val/mIoU_best', float('nan')):.4f}")
        if best:
            print(f"best checkpoint: {best}")
        print(f"run directory: {output_dir.resolve()}")
    return metrics


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


FAILURE_MARKER = "FAILED"


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _group_sweep_runs(cfg: DictConfig) -> None:
    """In a multirun, a W&B logger without a group gets the sweep directory's name as group."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if _in_multirun() and wandb_cfg is not None and wandb_cfg.get("group") is None:
        with open_dict(cfg):
            wandb_cfg.group = Path(HydraConfig.get().sweep.dir).name


def run_task(task, cfg: DictConfig) -> dict[str, Any] | None:
    """Run `task(cfg)`; always close loggers.

    A failing single run prints one short message (what, where, what to do) and exits with 1; the
    traceback goes to `<run dir>/FAILED` (or, with `HYDRA_FULL_ERROR=1`, to the console). A run
    that failed before writing a checkpoint leaves no run directory behind. A job of a multirun
    (sweep) logs the failure, writes `FAILED` and returns None, so the other jobs still run.
    """
    try:
        with _job_scoped_distributed_env():
            return task(cfg)
    except Exception as err:
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        if _in_multirun():
            log.exception("run failed; its outputs are in %s", output_dir)
            Path(output_dir, FAILURE_MARKER).write_text(traceback.format_exc())
            print(f"job failed (sweep continues); traceback in {Path(output_dir, FAILURE_MARKER)}", file=sys.stderr)
            return None
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_failure(err, output_dir, traceback.format_exc())
        sys.exit(1)
    finally:
        close_loggers()


# Set by Lightning's DDP launcher in the launching process (and left there after the run).
_DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def _job_scoped_distributed_env():
    """Undo what a DDP run leaves in its launching process (process group, launcher env vars),
    so the next job of a multirun in the same process launches its own processes afresh."""
    saved = {key: os.environ.get(key) for key in _DDP_LAUNCH_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """The command Lightning's DDP launcher runs for rank `local_rank` under Hydra.

    Lightning's own version re-runs `sys.argv`, which in a multirun (`-m`, Optuna, submitit)
    would start the whole sweep again in every child. This one re-runs *this job* as a single run
    in the job's directory: its own overrides, no Hydra output subdir (rank zero wrote it).
    """
    hydra_cfg = HydraConfig.get()
    logging_keys = ("hydra/job_logging", "hydra/hydra_logging", "hydra.verbose")
    logging_overrides = [o for o in hydra_cfg.overrides.hydra if o.split("=", 1)[0].lstrip("+~") in logging_keys]
    command = [sys.executable, "-m", "segsuite.train", f"--config-name={hydra_cfg.job.config_name}",
               *hydra_cfg.overrides.task, *logging_overrides,
               f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"', f"hydra.job.name=train_ddp_process_{local_rank}",
               "hydra.output_subdir=null", "hydra.mode=RUN"]
    return command, get_original_cwd()


def _use_job_command_for_ddp_children() -> None:
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = _ddp_child_command


def suggest_loss_params(cfg: DictConfig, trial: Any) -> None:
    """Optuna `custom_search_space` hook: suggest the parameters of the loss this trial uses.

    The loss is the trial's `loss` parameter (or the fixed `loss=` choice); its ranges come from
    `sweep_loss_params.<loss>.<param>` in the config (see conf/hparams_search/optuna.yaml):
    `{low, high, log}` suggests a float, `{choices: [...]}` a categorical value. A loss without
    an entry is searched without parameters.
    """
    loss = trial.params.get("loss") or trial.user_attrs.get("loss") or cfg.hydra.runtime.choices.get("loss")
    ranges = (cfg.get("sweep_loss_params") or {}).get(loss) or {}
    for param, spec in ranges.items():
        name = f"loss.{param}"
        if "choices" in spec:
            trial.suggest_categorical(name, list(spec.choices))
        elif "low" in spec and "high" in spec:
            trial.suggest_float(name, float(spec.low), float(spec.high), log=bool(spec.get("log", False)))
        else:
            raise ValueError(f"sweep_loss_params.{loss}.{param} must have `low` and `high` (float) or "
                             f"`choices` (categorical); got {OmegaConf.to_container(spec)}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers (None if the job failed)."""
    _use_job_command_for_ddp_children()
    metrics = run_task(train, cfg)
    if metrics is None:
        return None
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%s was not logged (logged: %s); returning None", name, sorted(metrics))
        return None
    value = metrics[name]
    return None if math.isnan(value) else value


if __name__ == "__main__":
    main()
