"""Launcher glue: what Hydra sweeps, Optuna and Lightning's DDP launcher need from a training job.

- `ddp_child_command`: the command Lightning's DDP launcher runs for each extra rank under Hydra.
  Lightning leaves no public way to set it; `use_job_command_for_ddp_children` is the one adapter
  that replaces its private hook (tests/test_launch.py fails when Lightning renames or reshapes it).
- `job_scoped_distributed_env`: what a DDP job leaves in its process is undone before the next
  job of a multirun.
- `suggest_loss_params`: the Optuna sweeper's `custom_search_space` hook.
- `group_sweep_runs`: the W&B runs of one sweep share a group.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from omegaconf import DictConfig, OmegaConf, open_dict

# Set by Lightning's DDP launcher in the launching process (and left there after the run).
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def in_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (`-m`, a sweeper, a launcher)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def group_sweep_runs(cfg: DictConfig) -> None:
    """In a multirun, a W&B logger without a group gets the sweep directory's name as group."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if in_multirun() and wandb_cfg is not None and wandb_cfg.get("group") is None:
        with open_dict(cfg):
            wandb_cfg.group = Path(HydraConfig.get().sweep.dir).name


@contextlib.contextmanager
def job_scoped_distributed_env() -> Iterator[None]:
    """Undo what a DDP run leaves in its launching process (process group, launcher env vars),
    so the next job of a multirun in the same process launches its own processes afresh."""
    saved = {key: os.environ.get(key) for key in DDP_LAUNCH_ENV}
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


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """The command Lightning's DDP launcher runs for rank `local_rank` under Hydra, and its cwd.

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


# Lightning's private hook (pytorch_lightning.strategies.launchers.subprocess_script) that builds the
# DDP child command when Hydra runs the job; it calls `_hydra_subprocess_cmd(local_rank)`.
LIGHTNING_DDP_HOOK = ("pytorch_lightning.strategies.launchers.subprocess_script", "_hydra_subprocess_cmd")


def use_job_command_for_ddp_children() -> None:
    """Make Lightning's DDP launcher start the extra ranks with `ddp_child_command`."""
    import importlib

    module_name, attribute = LIGHTNING_DDP_HOOK
    launcher = importlib.import_module(module_name)
    hook = getattr(launcher, attribute, None)
    if hook is None:
        raise AttributeError(f"{module_name}.{attribute} is gone: this Lightning version builds DDP child commands "
                             f"another way; segsuite.launch.use_job_command_for_ddp_children needs updating")
    setattr(launcher, attribute, ddp_child_command)


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
