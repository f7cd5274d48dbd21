"""The shipped model configs (`conf/model/*.yaml`) by name, composed the way Hydra composes them.

A model config may start from another one of the group through a `defaults:` list (for example
`unet_slim.yaml` is `unet` with a narrower width); `model_config` resolves that list, so scripts
and tests that build a model from its yaml outside a Hydra run get what `model=<name>` gives.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from segsuite.utils.paths import config_dir


def model_dir(conf_dir: str | Path | None = None) -> Path:
    """The `model` config group: `<conf>/model`."""
    return Path(conf_dir or config_dir()) / "model"


def model_names(conf_dir: str | Path | None = None) -> list[str]:
    """Names of the shipped model configs (the file stems of `conf/model/*.yaml`), sorted."""
    return sorted(p.stem for p in model_dir(conf_dir).glob("*.yaml"))


def model_config(name: str, conf_dir: str | Path | None = None) -> DictConfig:
    """The config of `model=<name>`, its `defaults:` list resolved (interpolations left as written).

    Entries of the defaults list name other configs of the same group, merged in list order; the
    file's own keys go where `_self_` stands (at the end when it is not listed, as in Hydra).
    """
    return _compose(name, model_dir(conf_dir), ())


def _compose(name: str, group: Path, seen: tuple[str, ...]) -> DictConfig:
    path = group / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model={name}: no {path}; the model configs are {model_names(group.parent)}")
    if name in seen:
        raise ValueError(f"model configs include each other in a cycle: {' -> '.join((*seen, name))}")
    own = OmegaConf.load(path)
    defaults = own.pop("defaults", None)
    if defaults is None:
        return own
    if not isinstance(defaults, ListConfig):
        raise TypeError(f"{path}: `defaults` must be a list of model config names and `_self_`")
    entries = [str(e) for e in defaults]
    if "_self_" not in entries:
        entries.append("_self_")
    merged = OmegaConf.create()
    for entry in entries:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, own)
        elif "/" not in entry and "=" not in entry and ":" not in entry:
            merged = OmegaConf.merge(merged, _compose(entry, group, (*seen, name)))
        else:
            raise ValueError(f"{path}: defaults entry {entry!r} is not the name of a model config in {group}")
    return merged
