"""What makes a run resumable at any step: a checkpoint on failure or Ctrl-C, and per-step seeding."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import OnExceptionCheckpoint
from torch.nn.modules.batchnorm import _NormBase

from segsuite.callbacks.finite import NonFiniteTrainingError, nonfinite_state
from segsuite.utils import signals


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
    """On an exception, Ctrl-C or a stop signal during `fit`, save `<dirpath>/<filename>.ckpt` and print how
    to resume.

    The checkpoint holds the exact position in the epoch, so `ckpt_path=` resumes with the next
    batch the interrupted run would have trained (see `SeededTrainSampler.start_next_epoch_at`):
    nothing since the last epoch boundary is lost. A run that ends normally deletes it.

    It is the state between two steps, whenever the fault came:
    - a stop signal (SIGINT, SIGTERM, SIGHUP, SIGUSR1/2; `segsuite.utils.signals`) lets the current
      step finish and stops before the next one, on every rank at the same step (a second signal
      stops at once);
    - a fault inside a step, before the optimizer stepped, puts back the normalisation layers'
      running statistics (BatchNorm's `running_mean`, `running_var`, `num_batches_tracked`) as they
      were when the step began: the step's forward pass had already updated them, and the resume
      runs that batch again;
    - a fault after the optimizer stepped (in a batch-end hook) counts the batch as done.
    Where the checkpoint cannot be written (a full disk) the run's own error is what is reported.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        super().__init__(dirpath=str(dirpath), filename=filename)
        self._norm_buffers: list[torch.Tensor] = []
        self._snapshot: list[torch.Tensor] | None = None
        self._step_at_start = -1
        self._in_step = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.reclaim()      # Lightning's SIGTERM handler (set in fit) would stop mid-validation and exit 0
        signals.defer(True)
        self._snapshot = None
        self._norm_buffers = [b for m in pl_module.modules() if isinstance(m, _NormBase) and m.track_running_stats
                              for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        stop = trainer.strategy.reduce_boolean_decision(signals.pending() is not None, all=False)
        if stop:  # every rank stops here, at the same step, before this batch touches anything
            raise signals.RunStopped(signals.pending() or signal.SIGTERM)
        self._step_at_start = trainer.global_step
        if self._norm_buffers:
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(b) for b in self._norm_buffers]
            torch._foreach_copy_(self._snapshot, self._norm_buffers)
        self._in_step = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._in_step = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.defer(False)
        if signals.pending() is not None:  # the signal came in the last step or validation: stop before testing
            raise signals.RunStopped(signals.pending())

    def _between_steps(self, trainer: pl.Trainer) -> None:
        """Make the state the one between two steps (see the class doc) after a fault inside one."""
        if not getattr(self, "_in_step", False):
            return
        self._in_step = False
        if trainer.global_step == self._step_at_start:   # the optimizer did not step: the batch runs again
            if self._snapshot is not None:
                torch._foreach_copy_(self._norm_buffers, self._snapshot)
        else:                                            # it did: the batch is done
            progress = trainer.fit_loop.epoch_loop.batch_progress
            if progress.current.completed < progress.current.processed:
                progress.increment_completed()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        signals.defer(False)
        trained = trainer.global_step > 0 or trainer.fit_loop.epoch_loop.batch_progress.current.processed > 0
        if trainer.state.fn != "fit" or trainer.sanity_checking or not trained:
            return  # nothing trained yet: nothing to keep
        self._between_steps(trainer)
        if isinstance(exception, NonFiniteTrainingError) or nonfinite_state(pl_module, trainer.optimizers):
            return  # diverged: a resume would diverge again; the run's finite checkpoints stay (callbacks.finite)
        try:
            super().on_exception(trainer, pl_module, exception)
        except OSError as err:  # e.g. the full disk that stopped the run: report the run's own error
            print(f"\n{Path(self.ckpt_path).name} not saved: {err}", file=sys.stderr, flush=True)
            return
        if trainer.is_global_zero:
            if isinstance(exception, KeyboardInterrupt):
                what = "interrupted"
            elif isinstance(exception, signals.RunStopped):
                what = str(exception)
            else:
                what = f"failed ({type(exception).__name__})"
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
