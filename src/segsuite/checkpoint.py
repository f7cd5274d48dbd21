"""Reading segsuite checkpoints: the run config, class names, palette and weights they carry."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segsuite.manifest import MANIFEST_KEY, RunManifest, upgrade_model_config

# what torch.load raises on a file that is no (complete) PyTorch checkpoint
_UNREADABLE = (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError)


def resolve_checkpoint_path(spec: str | Path, key: str = "ckpt_path") -> Path:
    """The checkpoint file `spec` names: a file, or the name of a zoo entry (`camvid_enet`, `conf/zoo/`).

    Every zoo checkpoint is verified against its entry's sha256, whether named or given by path (a
    damaged or changed file fails in one line). Errors name the setting `key` it came from.
    """
    from segsuite import zoo

    path = Path(spec).expanduser()
    if path.is_file():
        entry = zoo.entry_for_file(path)
        if entry is not None:
            zoo.verify_checkpoint(entry, path)
        return path
    name = str(spec)
    known = zoo.available()
    if name in known:
        return zoo.checkpoint_file(zoo.load_entry(name))
    raise FileNotFoundError(f"{key}={spec}: no such checkpoint file, and no zoo entry of that name "
                            f"(zoo entries: {', '.join(known) or 'none'})")


def read_checkpoint(spec: str | Path, key: str = "ckpt_path", mmap: bool = False) -> tuple[Path, Any]:
    """The file `spec` names (a path or a zoo name, `resolve_checkpoint_path`) and what it holds, read on the
    CPU with `weights_only` (Lightning checkpoints hold plain containers, tensors and numbers); `mmap`: tensors
    mapped, not read (for a look at the metadata). The one place segsuite reads a checkpoint file; a file torch
    cannot read fails in one line naming the setting `key` it came from."""
    path = resolve_checkpoint_path(spec, key)
    try:
        return path, torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _UNREADABLE as err:
        raise ValueError(f"{key}={path}: not a readable PyTorch checkpoint ({type(err).__name__}; cut short or "
                         f"damaged?); copy it again, or pass another checkpoint of a segsuite training run") from err


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint written by `segsuite.train` (on CPU), checking that it is one; `path` may also
    be a zoo name (`resolve_checkpoint_path`). Errors name the setting `key` it came from."""
    path, ckpt = read_checkpoint(path, key)
    if not isinstance(ckpt, dict) or MANIFEST_KEY not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a segsuite training checkpoint (no run info / state_dict inside)")
    return ckpt


def stored_model_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model config of the run that wrote `ckpt`, in today's layout (`upgrade_model_config`); {} if it
    stores none."""
    config = (ckpt.get(MANIFEST_KEY) or {}).get("config") or {}
    return upgrade_model_config(config.get("model") or {})


def check_same_model(stored: Mapping[str, Any], model: Mapping[str, Any], source: str,
                     builds: str = "the run builds", hint: str = "") -> None:
    """Raise unless `model` (a model config) is the architecture and class count of `stored` (the model
    config of the checkpoint `source` names): "<source> holds <A> with <n> classes, but <builds> <B> with
    <m> classes; <hint>". Resuming, starting from weights, evaluating on another dataset and rebuilding a
    stored model all ask it: the one check that a checkpoint fits."""
    if stored.get("_target_") == model.get("_target_") and _class_count(stored) == _class_count(model):
        return
    raise ValueError(f"{source} holds {stored.get('_target_')} with {stored.get('num_classes')} classes, but {builds} "
                     f"{model.get('_target_')} with {model.get('num_classes')} classes" + (f"; {hint}" if hint else ""))


def _class_count(model: Mapping[str, Any]) -> Any:
    value = model.get("num_classes")
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def run_config(ckpt: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in the checkpoint."""
    return OmegaConf.create(RunManifest.from_checkpoint(ckpt).config)


def _load_net_state(net: nn.Module, ckpt: dict[str, Any], what: str) -> None:
    """Load the checkpoint's `net.*` weights into `net` strictly; a mismatch fails with its first line."""
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{what}: {str(err).splitlines()[0]} ...") from err


def load_net_weights(net: nn.Module, ckpt: dict[str, Any], model_cfg: DictConfig, source: str) -> None:
    """Copy the checkpoint's network weights into `net` (built from `model_cfg`), strictly.

    A checkpoint of another architecture or class count fails naming both and `source`.
    """
    check_same_model(stored_model_config(ckpt), model_cfg, source,
                     hint="start from a checkpoint of the same model and dataset")
    _load_net_state(net, ckpt, f"{source}: its weights do not fit the configured model")


def build_net(ckpt: dict[str, Any], model_cfg: DictConfig | None = None) -> nn.Module:
    """Instantiate the checkpoint's architecture (pretrained download disabled) and load its weights.

    A `model_cfg` for a different architecture or class count fails naming both.
    """
    stored = OmegaConf.create(stored_model_config(ckpt))
    cfg = model_cfg if model_cfg is not None else stored
    check_same_model(stored, cfg, "checkpoint", builds="the requested model is")
    if isinstance(cfg.get("backbone"), DictConfig) and "pretrained" in cfg.backbone:
        cfg = OmegaConf.merge(cfg, {"backbone": {"pretrained": None}})   # no ImageNet download
    net = instantiate(cfg)
    _load_net_state(net, ckpt, f"the checkpoint's weights do not fit its stored model config "
                               f"({stored.get('_target_')} with {stored.get('num_classes')} classes)")
    return net
