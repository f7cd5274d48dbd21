"""The shipped configs by group and name (`conf/<group>/<name>.yaml`), composed as Hydra composes them.

A config may start from another one of its group through a `defaults:` list (`unet_slim` is `unet`
at a narrower width; `cocostuff164k` is `cocostuff10k` with other files and splits); `group_config`
resolves that list, so scripts and tests that build an object from its yaml outside a Hydra run
get what `<group>=<name>` gives. What exists is what `conf/` holds: `config_names` lists it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from segsuite.utils.paths import config_dir


def group_dir(group: str, conf_dir: str | Path | None = None) -> Path:
    """The config group's folder: `<conf>/<group>`."""
    return Path(conf_dir or config_dir()) / group


def config_names(group: str, conf_dir: str | Path | None = None) -> list[str]:
    """Names of the group's shipped configs (the file stems of `conf/<group>/*.yaml`), sorted."""
    return sorted(p.stem for p in group_dir(group, conf_dir).glob("*.yaml"))


def group_config(group: str, name: str, conf_dir: str | Path | None = None) -> DictConfig:
    """The config of `<group>=<name>`, its `defaults:` list resolved (interpolations left as written).

    Entries of the defaults list name other configs of the same group, merged in list order; the
    file's own keys go where `_self_` stands (at the end when it is not listed, as in Hydra).
    """
    return _compose(group, name, group_dir(group, conf_dir), ())


def _compose(group: str, name: str, folder: Path, seen: tuple[str, ...]) -> DictConfig:
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{group}={name}: no {path}; "
                                f"the {group} configs are {config_names(group, folder.parent)}")
    if name in seen:
        raise ValueError(f"{group} configs include each other in a cycle: {' -> '.join((*seen, name))}")
    own = OmegaConf.load(path)
    defaults = own.pop("defaults", None)
    if defaults is None:
        return own
    if not isinstance(defaults, ListConfig):
        raise TypeError(f"{path}: `defaults` must be a list of {group} config names and `_self_`")
    entries = [str(e) for e in defaults]
    if "_self_" not in entries:
        entries.append("_self_")
    merged = OmegaConf.create()
    for entry in entries:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, own)
        elif "/" not in entry and "=" not in entry and ":" not in entry:
            merged = OmegaConf.merge(merged, _compose(group, entry, folder, (*seen, name)))
        else:
            raise ValueError(f"{path}: defaults entry {entry!r} is not the name of a {group} config in {folder}")
    return merged


# the model group, by the names the scripts and tests use
def model_dir(conf_dir: str | Path | None = None) -> Path:
    return group_dir("model", conf_dir)


def model_names(conf_dir: str | Path | None = None) -> list[str]:
    return config_names("model", conf_dir)


def model_config(name: str, conf_dir: str | Path | None = None) -> DictConfig:
    return group_config("model", name, conf_dir)
