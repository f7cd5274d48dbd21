"""Checks that run before any work: config values of the right type, a checkpoint that fits the run."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from segsuite.manifest import MANIFEST_KEY, upgrade_model_config

# key -> (type, lower bound, what it is); None values are left to their defaults
NUMERIC_KEYS: dict[str, tuple[type, float, str]] = {
    "seed": (int, 0, "the random seed"),
    "data.batch_size": (int, 1, "the global batch size"),
    "data.val_batch_size": (int, 1, "the validation batch size"),
    "trainer.max_epochs": (int, -1, "the number of epochs"),
    "optimizer.lr": (float, 0, "the learning rate"),
    "optimizer.weight_decay": (float, 0, "the weight decay"),
}


def check_config_values(cfg: DictConfig) -> None:
    """Raise naming the key, the value and an example when a numeric setting is not a number."""
    for key, (kind, low, what) in NUMERIC_KEYS.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and (kind is float or float(value).is_integer()))
        if not ok or value < low:
            noun = "an integer" if kind is int else "a number"
            example = {int: 16, float: 0.001}[kind]
            raise ValueError(f"{key}={value!r}: expected {noun} >= {low:g} ({what}), e.g. {key}={example}")


def load_resume_checkpoint(path: str | Path, cfg: DictConfig) -> dict[str, Any]:
    """Read `ckpt_path` and check that it is a segsuite training checkpoint of this run's model.

    Returns what the resumed run records about its origin: the file, its run directory, epoch and step.
    """
    path = Path(path)
    where = f"ckpt_path={path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # Lightning reads it again
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        raise ValueError(f"{where}: not a readable PyTorch checkpoint ({type(err).__name__}); pass the last.ckpt, "
                         f"interrupted.ckpt or best.ckpt of a segsuite training run") from None
    if not isinstance(ckpt, dict) or "loops" not in ckpt or "optimizer_states" not in ckpt:
        hint = ("it holds only weights (a plain state dict or a zoo checkpoint); to start a new run from them, "
                "use init_from= with a segsuite checkpoint" if isinstance(ckpt, dict) else "it holds no training state")
        raise ValueError(f"{where}: cannot resume training from it: {hint}. Resume from a run's "
                         f"checkpoints/last.ckpt or interrupted.ckpt")
    stored = upgrade_model_config((ckpt.get(MANIFEST_KEY) or {}).get("config", {}).get("model", {}))
    model = cfg.model
    if stored and (stored.get("_target_") != model.get("_target_")
                   or stored.get("num_classes") != model.get("num_classes")):
        raise ValueError(
            f"{where} holds {stored.get('_target_')} with {stored.get('num_classes')} classes, but this run builds "
            f"{model.get('_target_')} with {model.get('num_classes')} classes; resume with the run's own model= "
            f"and dataset= (the resume command printed by the run has them)"
        )
    if stored:
        current = OmegaConf.to_container(model, resolve=True)
        stored, current = _without_pretrained(stored), _without_pretrained(current)
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differ:
            shown = ", ".join(f"model.{k}: {stored.get(k)!r} in the checkpoint, {current.get(k)!r} here"
                              for k in differ[:4])
            raise ValueError(f"{where} was trained with another model configuration ({shown}); resume with the "
                             f"checkpoint run's own settings (the resume command printed by that run has them)")
    return {"ckpt_path": str(path.resolve()), "run_dir": str(path.resolve().parent.parent),
            "epoch": int(ckpt.get("epoch", 0)), "global_step": int(ckpt.get("global_step", 0))}


def _without_pretrained(model: dict[str, Any]) -> dict[str, Any]:
    """A model config without `backbone.pretrained`: where the first weights came from is no setting of the net."""
    backbone = model.get("backbone")
    if isinstance(backbone, dict):
        return {**model, "backbone": {k: v for k, v in backbone.items() if k != "pretrained"}}
    return model


def splits_used(cfg: DictConfig) -> list[str]:
    """The splits the run reads: train and val to fit (val unless `trainer.limit_val_batches=0`), test to test."""
    splits = []
    if cfg.get("train"):
        splits.append("train")
        if (cfg.trainer.get("limit_val_batches") if cfg.trainer.get("limit_val_batches") is not None else 1) != 0:
            splits.append("val")
    if cfg.get("test"):
        splits.append("test")
    return splits


def check_run_paths(cfg: DictConfig) -> None:
    """`init_from` names a file, and the run directory holds no other run's checkpoints."""
    if cfg.get("init_from") and not Path(cfg.init_from).is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from}: no such checkpoint file")
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()):
        raise FileExistsError(f"{checkpoints.parent} already holds checkpoints of another run; "
                              f"refusing to overwrite them")
