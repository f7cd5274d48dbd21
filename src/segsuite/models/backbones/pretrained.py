"""Loading torchvision-format checkpoints from a local path, a URL or a torchvision weight name.

`pretrained: imagenet` (or `IMAGENET1K_V2`, `DEFAULT`, `ResNet50_Weights.IMAGENET1K_V2`) names
torchvision's ImageNet weights of the backbone's architecture: the URLs are data
(`conf/pretrained/torchvision.yaml`), never written in model code. URLs are downloaded once into
torch.hub's cache with their sha256 checked (`segsuite.utils.download`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from segsuite.utils.download import cached_download, is_url

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
# what a weight *file* is called; a setting without a path separator or one of these suffixes is a name
_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar", ".safetensors")


@functools.cache
def _weights_table() -> dict:
    from omegaconf import OmegaConf

    from segsuite.utils.paths import config_dir

    return OmegaConf.to_container(OmegaConf.load(config_dir() / "pretrained" / "torchvision.yaml"))


def weight_names(arch: str) -> list[str]:
    """The names `pretrained:` takes for backbone `arch` (e.g. `resnet50`); empty for an unknown one."""
    entry = _weights_table()["architectures"].get(arch)
    if entry is None:
        return []
    tags = [k for k in entry if k != "weights_class"]
    return ["imagenet", *tags, *(f"{entry['weights_class']}.{t}" for t in tags)]


def is_weight_name(text: str) -> bool:
    """Whether a `pretrained:` setting is a name (`imagenet`, `IMAGENET1K_V1`, ...) rather than a path or URL."""
    return not is_url(text) and "/" not in text and os.sep not in text and not text.lower().endswith(_FILE_SUFFIXES)


def weights_url(arch: str, name: str) -> str:
    """The URL of torchvision's weights `name` for backbone `arch`; an unknown name fails listing the known ones."""
    table = _weights_table()
    entry = table["architectures"].get(arch, {})
    tag = name.split(".", 1)[1] if name.startswith(f"{entry.get('weights_class')}.") else name
    tag = table["imagenet"] if tag.lower() == "imagenet" else tag
    tag = entry.get(tag, tag) if tag == "DEFAULT" else tag
    if tag == "weights_class" or not str(entry.get(tag, "")).startswith("https://"):
        known = ", ".join(weight_names(arch)) or f"none: torchvision has no weights for {arch}"
        raise ValueError(f"pretrained={name}: not a file, a URL or a weight name of {arch} (names: {known}); "
                         f"give one of those, a local path or an http(s) URL, or pretrained=null for random weights")
    return str(entry[tag])


def resolve_checkpoint(path_or_url: str | os.PathLike, arch: str | None = None) -> Path:
    """Return a local file for `path_or_url`: a path as it is; a URL, or a weight name of backbone `arch`
    (`imagenet`, torchvision's names), downloaded once into torch.hub's cache and its hash checked."""
    text = str(path_or_url)
    path = Path(text).expanduser()
    if arch is not None and is_weight_name(text) and not path.is_file():
        url = weights_url(arch, text)
        return cached_download(url, f"pretrained={text} ({arch})")
    if is_url(text):
        return cached_download(text, f"pretrained={text}")
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained checkpoint {path} does not exist: give an existing file, an http(s) URL or a weight "
            f"name (e.g. imagenet), or set pretrained=null to start from random weights."
        )
    return path


def load_pretrained(
    module: nn.Module,
    path_or_url: str | os.PathLike,
    exclude_prefixes: Iterable[str] = (),
    convert: Callable[[StateDict, StateDict, Path], StateDict] | None = None,
    arch: str | None = None,
) -> None:
    """Load a torchvision-format state dict into `module` with strict key matching.

    Keys starting with any of `exclude_prefixes` (e.g. the ImageNet classifier `fc.`) are dropped
    from the checkpoint first; `convert(state, own_state, path)`, if given, then adapts the file's
    tensors (e.g. Linear weights reshaped into convolutions). A mismatch raises naming the missing
    and unexpected keys or the wrong shapes. Loading uses `weights_only=True`, so a checkpoint can
    never run code. `arch` (e.g. `resnet50`) lets `path_or_url` be a weight name (`imagenet`).
    """
    path = resolve_checkpoint(path_or_url, arch)
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
