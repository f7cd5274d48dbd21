"""Checks that run before any work: config values of the right type, a checkpoint that fits the run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segsuite.checkpoint import check_same_model, read_checkpoint, resolve_checkpoint_path, stored_model_config
from segsuite.manifest import MANIFEST_KEY

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
    plain = OmegaConf.to_container(cfg, resolve=False)
    check_class_weights({key: plain.get(key) for key in ("class_weights", "loss")}, where="")


WEIGHT_KEYS = ("weight", "class_weights")


def check_class_weights(node: Any, where: str = "") -> None:
    """Raise naming the setting (e.g. `loss.weight`, `class_weights`) when per-class weights of the (unresolved,
    plain) config `node` are neither null, `auto` nor a list of non-negative numbers; nested loss configs included."""
    items = (node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ())
    for key, value in items:
        path = (f"{where}.{key}" if where else str(key)) if isinstance(node, dict) else f"{where}[{key}]"
        if key in WEIGHT_KEYS and isinstance(value, list):
            bad = [(i, v) for i, v in enumerate(value) if isinstance(v, bool) or not isinstance(v, (int, float))
                   or not math.isfinite(v) or v < 0]
            if bad:
                i, v = bad[0]
                raise ValueError(f"{path}={value}: entry {i + 1} ({v!r}) is not a non-negative number; expected a "
                                 f"list of one weight per class, auto or null, e.g. {path}=[1.0,2.5,...]")
        elif key in WEIGHT_KEYS and isinstance(value, str) and value != "auto" and not value.startswith("${"):
            raise ValueError(f"{path}={value!r}: expected a list of one weight per class, auto or null, "
                             f"e.g. {path}=[1.0,2.5,...] or {path}=auto")
        else:
            check_class_weights(value, path)


def load_resume_checkpoint(path: str | Path, cfg: DictConfig) -> dict[str, Any]:
    """Read `ckpt_path` and check that it is a segsuite training checkpoint of this run's model.

    Returns what the resumed run records about its origin: the file, its run directory, epoch and step.
    """
    path, ckpt = read_checkpoint(path, "ckpt_path", mmap=True)  # a file or a zoo name; Lightning reads it again
    where = f"ckpt_path={path}"
    if not isinstance(ckpt, dict) or "loops" not in ckpt or "optimizer_states" not in ckpt:
        hint = ("it holds only weights (a plain state dict or a zoo checkpoint); to start a new run from them, "
                "use init_from= with a segsuite checkpoint" if isinstance(ckpt, dict) else "it holds no training state")
        raise ValueError(f"{where}: cannot resume training from it: {hint}. Resume from a run's "
                         f"checkpoints/last.ckpt or interrupted.ckpt")
    stored = stored_model_config(ckpt)
    model = cfg.model
    if stored:
        check_same_model(stored, model, where, builds="this run builds", hint="resume with the run's own model= and "
                         "dataset= (the resume command printed by the run has them)")
        current = OmegaConf.to_container(model, resolve=True)
        stored, current = _without_pretrained(stored), _without_pretrained(current)
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differ:
            shown = ", ".join(f"model.{k}: {stored.get(k)!r} in the checkpoint, {current.get(k)!r} here"
                              for k in differ[:4])
            raise ValueError(f"{where} was trained with another model configuration ({shown}); resume with the "
                             f"checkpoint run's own settings (the resume command printed by that run has them)")
    _check_mid_epoch_batch_size(ckpt, cfg, where)
    return {"ckpt_path": str(path.resolve()), "run_dir": str(path.resolve().parent.parent),
            "epoch": int(ckpt.get("epoch", 0)), "global_step": int(ckpt.get("global_step", 0))}


def _check_mid_epoch_batch_size(ckpt: dict[str, Any], cfg: DictConfig, where: str) -> None:
    """A checkpoint saved mid-epoch resumes at the sample `batches done x its global batch size`
    (`SegDataModule.continue_interrupted_epoch` counts batches): another `data.batch_size` would skip
    or repeat samples of that epoch, so it is refused. At an epoch boundary any batch size may follow."""
    progress = ((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.batch_progress") or {}
    done = int((progress.get("current") or {}).get("completed", 0))
    stored = ((ckpt.get(MANIFEST_KEY) or {}).get("config") or {}).get("data", {}).get("batch_size")
    batch = OmegaConf.select(cfg, "data.batch_size")
    if not done or progress.get("is_last_batch") or stored is None or batch is None or int(stored) == int(batch):
        return
    raise ValueError(f"{where} was saved in the middle of epoch {int(ckpt.get('epoch', 0)) + 1}, after {done} batches "
                     f"of data.batch_size={stored}; with data.batch_size={batch} the rest of that epoch would start at "
                     f"another sample. Resume with data.batch_size={stored}, or change the batch size at an epoch "
                     f"boundary (resume from the run's checkpoints/last.ckpt)")


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
    """`init_from` names a file or a zoo entry, and the run directory holds no other run's checkpoints."""
    if cfg.get("init_from"):
        resolve_checkpoint_path(cfg.init_from, "init_from")
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()):
        raise FileExistsError(f"{checkpoints.parent} already holds checkpoints of another run; "
                              f"refusing to overwrite them")
