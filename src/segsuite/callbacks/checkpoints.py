"""Which checkpoints a run keeps: last.ckpt every epoch, and one best.ckpt across any number of resumes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class LastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that also saves at the end of every training epoch that saved nothing.

    With `save_on_train_epoch_end=False` it saves after each validation, as `ModelCheckpoint`
    does; an epoch without one (`trainer.limit_val_batches=0`, `check_val_every_n_epoch>1`,
    step-based `val_check_interval`) still ends with a checkpoint to resume from.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_skip_saving_checkpoint(trainer):  # among others: saved at this step already
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None or self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
        if self._last_global_step_saved == trainer.global_step:
            self._save_last_checkpoint(trainer, candidates)


class KeepBestOnResume(pl.Callback):
    """On a resume into a new run directory, carry each `ModelCheckpoint`'s best checkpoints over.

    Lightning restores a `ModelCheckpoint`'s scores only when its `dirpath` is unchanged, and a
    resumed segsuite run writes a directory of its own: the first validation after the resume
    then became best.ckpt however it scored. This callback copies the resumed run's best
    checkpoints (its `best_k_models`) into the new directory and restores the scores, so best.ckpt
    stays the best epoch of the whole run through any number of resumes. A checkpoint of another
    `monitor`/`mode` carries no state for the callback (Lightning keys it by them): the best is then
    chosen among the epochs after the resume, as it is when the old best file cannot be found.
    """

    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}
        self._resumed_from: Path | None = None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._states = dict(checkpoint.get("callbacks") or {})
        self._resumed_from = Path(trainer.ckpt_path) if trainer.ckpt_path else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after every strategy restored the callbacks (some restore after on_fit_start), before any save
        states, self._states = self._states, {}
        carried = False
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or callback.monitor is None:
                continue  # an unmonitored one (last.ckpt) keeps nothing to carry: its next save is the newest
            state = states.get(callback.state_key)
            if state is None or state.get("dirpath") in (None, callback.dirpath):
                continue  # nothing stored for it, or Lightning restored it in place
            self._carry_over(trainer, callback, state)
            carried = True
        if carried:  # every process decides alike (same checkpoint); the others wait for rank 0's copies
            trainer.strategy.barrier("keep_best_on_resume")

    def _carry_over(self, trainer: pl.Trainer, callback: ModelCheckpoint, state: dict[str, Any]) -> None:
        scores = dict(state.get("best_k_models") or {})
        found = {old: self._find(old) for old in scores}
        missing = [old for old, path in found.items() if path is None]
        if missing or not scores:  # nothing to carry: the best is chosen afresh, among the epochs from here on
            if missing:
                log.warning("resume: %s, a best checkpoint (by %s) of the resumed run, is missing; best.ckpt is "
                            "chosen among the epochs from here on", ", ".join(missing), callback.monitor)
            callback.best_k_models, callback.best_model_score = {}, None
            callback.best_model_path, callback.kth_best_model_path = "", ""
            return
        renamed = {old: os.path.join(callback.dirpath, Path(old).name) for old in scores}
        if trainer.is_global_zero:
            for old, path in found.items():
                _copy(path, Path(renamed[old]))
        callback.best_k_models = {renamed[old]: score for old, score in scores.items()}
        callback.best_model_path = renamed.get(state.get("best_model_path", ""), "")
        callback.best_model_score = state.get("best_model_score")
        callback.kth_best_model_path = renamed.get(state.get("kth_best_model_path", ""), "")
        callback.kth_value = state.get("kth_value", callback.kth_value)
        log.info("resume: the best checkpoint so far (%s %s) copied to %s", callback.monitor,
                 _score(callback.best_model_score), callback.best_model_path)

    def _find(self, old: str) -> Path | None:
        """The file `old`, or the file of its name beside the resumed checkpoint (a run moved elsewhere)."""
        candidates = [Path(old)]
        if self._resumed_from is not None:
            candidates.append(self._resumed_from.parent / Path(old).name)
        return next((p for p in candidates if p.is_file()), None)


def _copy(source: Path, target: Path) -> None:
    """Copy through a temporary file in the target folder: a crash leaves no half-copied checkpoint."""
    if source.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.copying")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _score(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
