"""Reading segsuite checkpoints: the run config, class names, palette and weights they carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `segsuite.train` (on CPU), checking that it is one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    # Lightning checkpoints hold plain containers, tensors and numbers: weights_only is enough.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "segsuite" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a segsuite training checkpoint (no run info / state_dict inside)")
    return ckpt


def run_config(ckpt: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in the checkpoint."""
    return OmegaConf.create(ckpt["segsuite"]["config"])


def build_net(ckpt: dict[str, Any], model_cfg: DictConfig | None = None) -> nn.Module:
    """Instantiate the checkpoint's architecture (pretrained download disabled) and load its weights.

    A `model_cfg` for a different architecture or class count fails naming both.
    """
    info = ckpt["segsuite"]
    stored = OmegaConf.create(info["config"]["model"])
    cfg = model_cfg if model_cfg is not None else stored
    if cfg.get("_target_") != stored.get("_target_") or cfg.get("num_classes") != stored.get("num_classes"):
        raise ValueError(
            f"checkpoint holds {stored.get('_target_')} with {stored.get('num_classes')} classes, but the "
            f"requested model is {cfg.get('_target_')} with {cfg.get('num_classes')} classes"
        )
    cfg = OmegaConf.merge(cfg, {"pretrained": None} if "pretrained" in cfg else {})
    net = instantiate(cfg)
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state, strict=True)
    return net
