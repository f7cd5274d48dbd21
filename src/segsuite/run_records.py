"""What a training run writes and prints about itself: its config and facts at the start, its
metrics and the best epoch's table at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from segsuite.module import VAL_SCORES_KEY, SegmentationModule
from segsuite.utils.config import print_config_tree, save_resolved
from segsuite.utils.reporting import format_scores
from segsuite.utils.safe_io import atomic_write_text


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The single-number entries of Lightning's `callback_metrics`, as floats."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def record_start(cfg: DictConfig, output_dir: Path, facts: dict[str, Any], loggers: list) -> None:
    """`config.yaml`, `run_facts.json` (and the printed config tree) in the run directory; the config
    and facts as every logger's hyperparameters."""
    if cfg.get("print_config"):
        print_config_tree(cfg, save_to=output_dir / "config_tree.log")
    save_resolved(cfg, output_dir / "config.yaml")
    atomic_write_text(output_dir / "run_facts.json", json.dumps(facts, indent=2))
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "run": facts})


def selected_checkpoint(trainer: pl.Trainer) -> tuple[str, str]:
    """The checkpoint a run tests and whose validation its final table shows, and why it was chosen.

    The best of the first monitored `ModelCheckpoint` (best.ckpt by val/mIoU, kept through resumes
    by `KeepBestOnResume`); where it saved none (nothing was validated), the newest checkpoint of an
    unmonitored one (last.ckpt). `('', '')` if there is none.
    """
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    for callback in callbacks:
        if callback.monitor is not None and callback.best_model_path:
            return callback.best_model_path, f"by {callback.monitor}"
    for callback in callbacks:
        path = callback.last_model_path or callback.best_model_path
        if callback.monitor is None and path:
            return path, "the newest checkpoint"
    return "", ""


def skipped_facts(skipped: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """`skipped_bad_samples` of run_facts.json: per split, how many samples were left out (`data.skip_bad`)
    and the message naming each one's file and problem."""
    return {split: {"count": len(messages), "samples": list(messages)} for split, messages in skipped.items()
            if messages}


def report_skipped(skipped: dict[str, list[str]]) -> dict[str, Any]:
    """Print the samples `data.skip_bad` left out, named, and return them as stored in the records."""
    if skipped_facts(skipped):
        print(describe_skipped(skipped))
    return skipped_facts(skipped)


def record_skipped(output_dir: Path, skipped: dict[str, list[str]]) -> None:
    """Every sample left out by `data.skip_bad` (at the check and while in use), in run_facts.json's
    `skipped_bad_samples` (rewritten: the run found some only while training) and printed, named."""
    path, named = output_dir / "run_facts.json", report_skipped(skipped)
    if path.is_file():
        facts = json.loads(path.read_text())
        if facts.get("skipped_bad_samples") != named:
            facts["skipped_bad_samples"] = named
            atomic_write_text(path, json.dumps(facts, indent=2))


def describe_skipped(skipped: dict[str, list[str]]) -> str:
    """Per split, the count of samples left out by `data.skip_bad` and each one named ('' if none)."""
    return "\n".join(f"{split} split: {len(messages)} bad sample(s) left out (data.skip_bad=true):\n  "
                     + "\n  ".join(messages) for split, messages in skipped.items() if messages)


def best_checkpoint(trainer: pl.Trainer) -> str:
    """The path of the checkpoint the run selects ('' if none): see `selected_checkpoint`."""
    return selected_checkpoint(trainer)[0]


def selection_summary(path: str | Path, why: str, class_names: list[str]) -> str:
    """The selected checkpoint's epoch and the validation scores stored with its weights."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    epoch, name = int(ckpt.get("epoch", 0)) + 1, Path(path).name
    stored = ckpt.get(VAL_SCORES_KEY)
    if stored is None:  # written before segsuite kept them: its "best so far", where that is this epoch
        best = ckpt.get("segsuite_best_val")
        stored = best if best and int(best["epoch"]) + 1 == epoch else None
    kind = "best" if why.startswith("by ") else "selected"
    if stored is None:
        return (f"Selected epoch {epoch} ({why}, checkpoint {name}): not validated, so no validation table; "
                f"the test split scores it")
    return format_scores(f"Validation metrics of the {kind} epoch ({epoch}, {why}, checkpoint {name})",
                         stored["scores"], class_names)


def record_end(trainer: pl.Trainer, module: SegmentationModule, metrics: dict[str, float], output_dir: Path,
               trained: bool, selected: tuple[str, str] | None = None,
               skipped: dict[str, list[str]] | None = None) -> None:
    """The samples left out (`record_skipped`), `metrics.json`, then the selected (best) epoch's validation
    table, read from the checkpoint the run tested (`selected`: `selected_checkpoint` at the end of
    fitting), that checkpoint and the run directory."""
    if skipped is not None:
        record_skipped(output_dir, skipped)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    path, why = selected or selected_checkpoint(trainer)
    if trained and path:
        print(selection_summary(path, why, module.class_names))
    if "val/mIoU_best" in metrics:
        print(f"val/mIoU_best: {metrics['val/mIoU_best']:.4f}")
    if path:
        print(f"{'best' if why.startswith('by ') else 'selected'} checkpoint: {path}")
    print(f"run directory: {output_dir.resolve()}")
