"""What makes a run resumable at any step: a checkpoint on failure or Ctrl-C, and per-step seeding."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import OnExceptionCheckpoint


def resume_command(ckpt_path: str | Path) -> str:
    """The command that resumes this run from `ckpt_path`: the run's own overrides, `ckpt_path=` replaced,
    `hydra.run.dir=` left out (the resumed run writes a directory of its own)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        # the resumed run gets a directory of its own (see RefuseUsedRunDir)
        overrides = [o for o in hydra_cfg.overrides.task
                     if o.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "hydra.run.dir")]
        config_name = hydra_cfg.job.config_name
    except ValueError:  # not under Hydra
        overrides, config_name = [], "train"
    name = [] if config_name == "train" else [f"--config-name={config_name}"]
    return shlex.join(["python", "-m", "segsuite.train", *name, *overrides, f"ckpt_path={ckpt_path}"])


class CheckpointOnFailure(OnExceptionCheckpoint):
    """On an exception or Ctrl-C during `fit`, save `<dirpath>/<filename>.ckpt` and print how to resume.

    The checkpoint holds the exact position in the epoch, so `ckpt_path=` resumes with the next
    batch the interrupted run would have trained (see `SeededTrainSampler.start_next_epoch_at`):
    nothing since the last epoch boundary is lost. A run that ends normally deletes it.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        super().__init__(dirpath=str(dirpath), filename=filename)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        trained = trainer.global_step > 0 or trainer.fit_loop.epoch_loop.batch_progress.current.processed > 0
        if trainer.state.fn != "fit" or trainer.sanity_checking or not trained:
            return  # nothing trained yet: nothing to keep
        super().on_exception(trainer, pl_module, exception)
        if trainer.is_global_zero:
            what = "interrupted" if isinstance(exception, KeyboardInterrupt) else f"failed ({type(exception).__name__})"
            print(f"\nTraining {what} in epoch {trainer.current_epoch + 1}, at step {trainer.global_step}; saved "
                  f"{self.ckpt_path}. Resume with:\n  {resume_command(self.ckpt_path)}", file=sys.stderr, flush=True)


class ContinueInterruptedEpoch(pl.Callback):
    """On a resume from a mid-epoch checkpoint (`interrupted.ckpt`), continue the epoch at the batch the
    interrupted run stopped at, not at its start (`SegDataModule.continue_interrupted_epoch`)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "continue_interrupted_epoch"):
            datamodule.continue_interrupted_epoch(trainer)


class StepSeed(pl.Callback):
    """Seed torch's generators from (seed, step, rank) before every training step.

    Randomness inside a step (dropout, stochastic depth) then depends on the step alone, not on
    how many random numbers the process drew before it (data loader iterators, a resume), so a
    resumed run draws the same dropout masks as an uninterrupted one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        torch.manual_seed((self.seed * 1_000_003 + trainer.global_step * 1_009 + trainer.global_rank) % 2**63)
