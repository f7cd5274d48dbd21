"""Stopping a diverging run: a non-finite loss or non-finite weights fail it, and no checkpoint holds them."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn.modules.batchnorm import _NormBase

log = logging.getLogger(__name__)


class NonFiniteTrainingError(FloatingPointError):
    """The training loss, the weights or the validation loss of a run became NaN or infinite."""


def nonfinite_tensors(named: Iterable[tuple[str, Any]], most: int = 5) -> list[str]:
    """Names of the floating-point tensors in `named` holding a NaN or an infinity (at most `most`).

    One reduction per tensor on its device, one host sync per device.
    """
    by_device: dict[torch.device, tuple[list[str], list[torch.Tensor]]] = {}
    for name, value in named:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            names, flags = by_device.setdefault(value.device, ([], []))
            names.append(name)
            flags.append(torch.isfinite(value).all())
    bad = []
    for names, flags in by_device.values():
        bad += [name for name, finite in zip(names, torch.stack(flags).tolist()) if not finite]
    return bad[:most]


def _walk(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(path, tensor) of every tensor in nested dicts/lists (a checkpoint's optimizer states)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{prefix}.{i}")


def nonfinite_state(module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer] = ()) -> list[str]:
    """Parameters, buffers (BatchNorm running statistics) and optimizer states of a model that are not finite."""
    named = [*module.named_parameters(), *module.named_buffers()]
    for i, optimizer in enumerate(optimizers):
        named.extend(_walk(optimizer.state_dict().get("state", {}), f"optimizer{i}"))
    return nonfinite_tensors(named)


class FiniteTraining(pl.Callback):
    """Fail a run whose loss or weights stop being finite, before any checkpoint stores them.

    - The training loss of every optimizer step (all micro-batches of an accumulated step) is checked
      after backward and before the optimizer step, so a non-finite loss never reaches the weights.
      Up to `max_nonfinite_steps` such steps (over the whole run, resumes included) are skipped: their
      gradients are dropped, the weights and BatchNorm statistics stay as they were (under fp16 AMP
      the gradient scaler skips the update itself), the step still counts in the schedule; the next
      one fails the run. Cost: the flag is kept on the device and read
      once per optimizer step (one scalar copy to the host, after backward is queued); with several
      processes one extra all-reduce of that flag, so all of them stop at the same step. With a skip
      budget, the BatchNorm statistics are also copied on the device at each step's start.
    - After each validation, before the checkpoint callbacks save, the parameters and buffers
      (BatchNorm running statistics, which a finite loss can hide) and the validation loss are
      checked; and every checkpoint is checked as it is written. A non-finite one fails the run,
      so `best.ckpt` and `last.ckpt` keep the last finite state. Cost: one pass over the weights
      per validation and over the checkpoint's tensors per save.

    A failure raises `NonFiniteTrainingError`; `segsuite.train` reports it in one line and exits 1
    (a sweep job records `FAILED` and returns no value: Optuna counts the trial as failed).
    """

    def __init__(self, max_nonfinite_steps: int = 0) -> None:
        if isinstance(max_nonfinite_steps, bool) or not isinstance(max_nonfinite_steps, int) or max_nonfinite_steps < 0:
            raise ValueError(f"callbacks.finite.max_nonfinite_steps={max_nonfinite_steps!r}: expected a count >= 0")
        self.max_nonfinite_steps = max_nonfinite_steps
        self.skipped = 0          # non-finite steps skipped so far (kept in checkpoints)
        self._bad: torch.Tensor | None = None   # any micro-batch of this step with a non-finite loss (on device)
        self._loss: torch.Tensor | None = None
        self._norm_buffers: list[torch.Tensor] = []     # BatchNorm running statistics, restored on a skip
        self._snapshot: list[torch.Tensor] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.max_nonfinite_steps:  # a skipped step's forward pass must not leave its statistics behind
            self._norm_buffers = [b for m in pl_module.modules() if isinstance(m, _NormBase) and m.track_running_stats
                                  for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._norm_buffers and self._bad is None:  # the first micro-batch of an optimizer step
            if self._snapshot is None:
                self._snapshot = [torch.empty_like(b) for b in self._norm_buffers]
            torch._foreach_copy_(self._snapshot, self._norm_buffers)

    # -- the loss of each step -------------------------------------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        bad = ~torch.isfinite(loss)              # on the device: no host sync here
        if self._bad is None:
            self._bad, self._loss = bad, loss
        else:  # accumulated micro-batches: remember whether any was bad, and a bad value for the message
            self._bad, self._loss = self._bad | bad, torch.where(bad, loss, self._loss)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        bad, loss = self._bad, self._loss
        self._bad = self._loss = None
        if bad is None:
            return
        diverged = bool(bad)                        # the one host sync per step
        if trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if not diverged:
            return
        value = float(loss) if loss is not None else math.nan
        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
        if self.skipped < self.max_nonfinite_steps:
            self.skipped += 1
            if getattr(trainer.precision_plugin, "scaler", None) is None:
                optimizer.zero_grad(set_to_none=True)  # no gradient: the optimizer leaves every weight as it is
            if self._snapshot is not None:
                torch._foreach_copy_(self._norm_buffers, self._snapshot)
            log.warning("training loss is %s %s: step skipped, weights unchanged (%d of %d allowed by "
                        "callbacks.finite.max_nonfinite_steps)", value, where, self.skipped, self.max_nonfinite_steps)
            return
        allowed = (f"the {self.max_nonfinite_steps} skip(s) allowed by callbacks.finite.max_nonfinite_steps are used up"
                   if self.max_nonfinite_steps else
                   "set callbacks.finite.max_nonfinite_steps=N to skip up to N such steps")
        raise NonFiniteTrainingError(
            f"training diverged: the loss is {value} {where}. Lower optimizer.lr (now {_lr(optimizer)}), set "
            f"trainer.gradient_clip_val, or {allowed}; {_kept(trainer)}")

    # -- weights and validation ------------------------------------------------------------------
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        where = f"after step {trainer.global_step} (epoch {trainer.current_epoch + 1})"
        bad = nonfinite_state(pl_module)
        if bad:
            raise NonFiniteTrainingError(
                f"training diverged: weights are not finite {where} ({', '.join(bad)}). Lower optimizer.lr, set "
                f"trainer.gradient_clip_val or use a higher precision; {_kept(trainer)}")
        val_loss = trainer.callback_metrics.get("val/loss")
        if val_loss is not None and not math.isfinite(float(val_loss)):
            raise NonFiniteTrainingError(
                f"training diverged: the validation loss is {float(val_loss)} {where} though the weights are finite "
                f"(the forward pass overflows: weights grown too large, or trainer.precision={trainer.precision} too "
                f"narrow). Lower optimizer.lr or set trainer.gradient_clip_val; {_kept(trainer)}")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # the weights and buffers only: metric states such as the best-so-far score are -inf before a validation
        weights = {name for name, _ in (*pl_module.named_parameters(), *pl_module.named_buffers())}
        state = {name: value for name, value in checkpoint.get("state_dict", {}).items() if name in weights}
        bad = nonfinite_tensors([*_walk(state, "state_dict"),
                                 *_walk(checkpoint.get("optimizer_states", []), "optimizer_states")])
        if bad:
            raise NonFiniteTrainingError(f"training diverged: not writing a checkpoint at step {trainer.global_step} "
                                         f"with non-finite tensors ({', '.join(bad)}); {_kept(trainer)}")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def _lr(optimizer) -> str:
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    return ", ".join(f"{lr:g}" for lr in rates)


def _kept(trainer: pl.Trainer) -> str:
    """Which checkpoints of the run were written before it diverged (all finite)."""
    saved = {Path(path) for cb in trainer.checkpoint_callbacks  # a path is named before its file is written
             for path in (getattr(cb, "best_model_path", ""), getattr(cb, "last_model_path", ""))
             if path and Path(path).is_file()}
    if not saved:
        return "no checkpoint was written before"
    names = ", ".join(sorted(p.name for p in saved))
    return f"the checkpoints written before ({names} in {next(iter(saved)).parent}) are finite"
