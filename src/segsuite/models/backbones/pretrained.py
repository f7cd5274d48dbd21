"""Loading torchvision-format checkpoints from a local path or a URL (cached like torch.hub)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def resolve_checkpoint(path_or_url: str | os.PathLike) -> Path:
    """Return a local file for `path_or_url`, downloading URLs once into torch.hub's cache."""
    text = str(path_or_url)
    if text.startswith(("http://", "https://")):
        cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
        cache_dir.mkdir(parents=True, exist_ok=True)
        target = cache_dir / os.path.basename(text.split("?")[0])
        if not target.exists():
            log.info("downloading %s to %s", text, target)
            torch.hub.download_url_to_file(text, str(target), progress=True)
        return target
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {path} does not exist: give an existing file or an http(s) URL, "
            f"or set pretrained=null to start from random weights."
        )
    return path


def load_pretrained(
    module: nn.Module,
    path_or_url: str | os.PathLike,
    exclude_prefixes: Iterable[str] = (),
    convert: Callable[[StateDict, StateDict, Path], StateDict] | None = None,
) -> None:
    """Load a torchvision-format state dict into `module` with strict key matching.

    Keys starting with any of `exclude_prefixes` (e.g. the ImageNet classifier `fc.`) are dropped
    from the checkpoint first; `convert(state, own_state, path)`, if given, then adapts the file's
    tensors (e.g. Linear weights reshaped into convolutions). A mismatch raises naming the missing
    and unexpected keys or the wrong shapes. Loading uses `weights_only=True`, so a checkpoint can
    never run code.
    """
    path = resolve_checkpoint(path_or_url)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    prefixes = tuple(exclude_prefixes)
    state = {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}
    own = module.state_dict()
    if convert is not None:
        state = convert(state, own, path)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match {type(module).__name__}: "
            f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''} ({len(unexpected)})"
        )
    wrong_shape = [k for k in own if own[k].shape != state[k].shape]
    if wrong_shape:
        details = ", ".join(f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
                            for k in wrong_shape[:10])
        raise RuntimeError(f"checkpoint {path} has tensors of the wrong shape for {type(module).__name__}: {details}")
    module.load_state_dict(state, strict=True)
    log.info("loaded pretrained weights from %s", path)
