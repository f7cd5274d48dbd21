"""The shipped configs by group and name (`conf/<group>/<name>.yaml`), composed as Hydra composes them.

A config may start from another one of its group through a `defaults:` list (`unet_slim` is `unet`
at a narrower width; `cocostuff164k` is `cocostuff10k` with other files and splits); `group_config`
composes it with Hydra's compose API, so scripts and tests that build an object from its yaml outside
a Hydra run get what `<group>=<name>` gives. What exists is what `conf/` holds: `config_names` lists it.
A config group is a folder a command's defaults list names (`command_groups`): `conf/zoo` and
`conf/pretrained` hold data read by code, and are no groups.

The catalog also answers what scripts and tests ask about each entry, from its config and from facts
declared on the class it builds, never from a list kept here: which model configs are architectures
and which variants, which sit on a backbone, each paper's crop and dataset (`paper_crop`,
`paper_dataset` on the model class); which losses take precomputed maps (`target_fn`) or follow
training progress (`set_progress`); the size of each dataset's released images (`official_image_size`
on the dataset class). Facts the tests need beyond these (a dataset's tree, label values and encoding)
are declared on the dataset class too; the miniature trees built from them live on the test side
(`tests/support/dataset_trees.py`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from segsuite.utils.paths import config_dir


def group_dir(group: str, conf_dir: str | Path | None = None) -> Path:
    """The config group's folder: `<conf>/<group>`."""
    return Path(conf_dir or config_dir()) / group


def config_names(group: str, conf_dir: str | Path | None = None) -> list[str]:
    """Names of the group's shipped configs (the file stems of `conf/<group>/*.yaml`), sorted."""
    return sorted(p.stem for p in group_dir(group, conf_dir).glob("*.yaml"))


def group_config(group: str, name: str, conf_dir: str | Path | None = None) -> DictConfig:
    """The config of `<group>=<name>` as Hydra composes it (interpolations left as written): Hydra's
    compose API, the one way a config is composed in segsuite (`+<group>=<name>` on an empty primary).

    A group config may start from others of its own group (`defaults: [voc, _self_]`); an entry that
    names no config of the group, or configs that include each other, are refused naming the file.
    A group's configs are composed together, once while its files stay unchanged.
    """
    folder = group_dir(group, conf_dir).resolve()
    _check_defaults(group, name, folder, ())
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.yaml")))
    return copy.deepcopy(_composed_group(group, str(folder.parent), stamp)[name])


def _check_defaults(group: str, name: str, folder: Path, seen: tuple[str, ...]) -> None:
    """Refuse what Hydra would not compose into `<group>=<name>`, or would compose into another package:
    a missing config, a defaults entry naming another group's config, a cycle."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{group}={name}: no {path}; "
                                f"the {group} configs are {config_names(group, folder.parent)}")
    if name in seen:
        raise ValueError(f"{group} configs include each other in a cycle: {' -> '.join((*seen, name))}")
    defaults = OmegaConf.load(path).get("defaults")
    if defaults is None:
        return
    if not isinstance(defaults, ListConfig):
        raise TypeError(f"{path}: `defaults` must be a list of {group} config names and `_self_`")
    for entry in (str(e) for e in defaults):
        if entry == "_self_":
            continue
        if any(c in entry for c in "/=:{"):
            raise ValueError(f"{path}: defaults entry {entry!r} is not the name of a {group} config in {folder}")
        _check_defaults(group, entry, folder, (*seen, name))


@functools.lru_cache(maxsize=64)
def _composed_group(group: str, conf_dir: str, stamp: tuple) -> dict[str, DictConfig]:
    """Every config of the group that `_check_defaults` accepts, composed by Hydra in one call, each
    in a package of its own (`+<group>@c<i>=<name>`): one compose costs ~0.1 s, mostly Hydra's own config."""
    names = []
    for name in config_names(group, conf_dir):
        try:
            _check_defaults(group, name, Path(conf_dir) / group, ())
            names.append(name)
        except (OSError, TypeError, ValueError):  # refused when asked for by name
            pass
    with _own_hydra(conf_dir):
        cfg = compose(overrides=[f"+{group}@c{i}={name}" for i, name in enumerate(names)])
    # plain configs: no struct flag, no parent
    return {name: OmegaConf.create(OmegaConf.to_container(cfg[f"c{i}"], resolve=False))
            for i, name in enumerate(names)}


@contextlib.contextmanager
def _own_hydra(conf_dir: str) -> Iterator[None]:
    """Hydra initialised on `conf_dir` for one compose, also inside a running Hydra app (whose own
    initialisation is set aside and given back)."""
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


# -- the commands and the groups they compose ------------------------------------------------------
def commands(conf_dir: str | Path | None = None) -> list[str]:
    """The primary configs, one per Hydra entry point (`conf/train.yaml` -> `segsuite.train`), sorted."""
    return sorted(p.stem for p in Path(conf_dir or config_dir()).glob("*.yaml"))


def command_groups(command: str, conf_dir: str | Path | None = None) -> dict[str, str | None]:
    """The config groups `segsuite.<command>` composes, in its defaults-list order, each with its default
    option (None for a `<group>: null` overlay such as `experiment`); Hydra's own `hydra` group left out.

    A folder of `conf/` that no command's defaults list names is data read by code, not a group
    (`conf/zoo`: the model zoo's entries; `conf/pretrained`: weight names and URLs).
    """
    primary = OmegaConf.load(Path(conf_dir or config_dir()) / f"{command}.yaml")
    groups: dict[str, str | None] = {}
    for entry in primary.get("defaults", []):
        if isinstance(entry, DictConfig):
            for group, option in entry.items():
                if not str(group).startswith(("hydra", "override ")):
                    groups[str(group)] = None if option is None else str(option)
    return groups


def config_groups(conf_dir: str | Path | None = None) -> list[str]:
    """Every config group some command composes (`command_groups`), sorted."""
    return sorted({group for command in commands(conf_dir) for group in command_groups(command, conf_dir)})


# the model group, by the names the scripts and tests use
def model_dir(conf_dir: str | Path | None = None) -> Path:
    return group_dir("model", conf_dir)


def model_names(conf_dir: str | Path | None = None) -> list[str]:
    return config_names("model", conf_dir)


def model_config(name: str, conf_dir: str | Path | None = None) -> DictConfig:
    return group_config("model", name, conf_dir)


# -- what each entry is: facts read from conf/ and from the classes its configs name ----------------
def config_class(group: str, name: str, conf_dir: str | Path | None = None) -> type:
    """The class `<group>=<name>` builds: its `_target_` (a dataset's: its train split's `_target_`)."""
    cfg = group_config(group, name, conf_dir)
    node = cfg.get("train", cfg) if group == "dataset" else cfg
    if "_target_" not in node:
        raise KeyError(f"{group}={name}: the config names no `_target_` class")
    return get_class(str(node._target_))


# models
def has_backbone(name: str, conf_dir: str | Path | None = None) -> bool:
    """Whether model `name` sits on an exchangeable backbone: its config has a `backbone` key."""
    return "backbone" in model_config(name, conf_dir)


def model_backbone(name: str, conf_dir: str | Path | None = None) -> str | None:
    """The backbone model `name` is configured with (`backbone.name`, or `backbone` as a plain name)."""
    backbone = model_config(name, conf_dir).get("backbone")
    if isinstance(backbone, DictConfig):
        return backbone.get("name")
    return None if backbone is None else str(backbone)


def backbone_family(name: str, conf_dir: str | Path | None = None) -> str | None:
    """The family of model `name`'s backbone ("resnet", "vgg"): the module of its builder (`_target_`),
    or the letters of a plainly named one; None for a model without a backbone."""
    backbone = model_config(name, conf_dir).get("backbone")
    if isinstance(backbone, DictConfig) and "_target_" in backbone:
        return str(backbone._target_).rsplit(".", 2)[-2]
    named = model_backbone(name, conf_dir)
    return None if named is None else named.rstrip("0123456789_bn") or named


def takes_backbone(name: str, backbone: str, conf_dir: str | Path | None = None) -> bool:
    """Whether `backbone` (e.g. "resnet18") can replace model `name`'s: a backbone of its family."""
    family = backbone_family(name, conf_dir)
    return family is not None and backbone.startswith(family)


def backbone_key(name: str, conf_dir: str | Path | None = None) -> str:
    """The key, under `model.`, that names model `name`'s backbone: `backbone.name` (`backbone` where
    the config gives the backbone as a plain name)."""
    backbone = model_config(name, conf_dir).get("backbone")
    return "backbone.name" if isinstance(backbone, DictConfig) else "backbone"


def paper_crop(name: str, conf_dir: str | Path | None = None) -> tuple[int, int] | None:
    """The (H, W) training crop of the paper of model `name` (`paper_crop` on its class), or None."""
    crop = getattr(config_class("model", name, conf_dir), "paper_crop", None)
    return None if crop is None else (int(crop[0]), int(crop[1]))


def paper_dataset(name: str, conf_dir: str | Path | None = None) -> str | None:
    """The dataset the paper of model `name` trained on (`paper_dataset` on its class), or None."""
    return getattr(config_class("model", name, conf_dir), "paper_dataset", None)


def architectures(conf_dir: str | Path | None = None) -> list[str]:
    """One model config per model class: the one that builds the class's own network.

    Configs of one class (`fcn8s` `fcn16s` `fcn32s`; `unet` `unet_slim`) are told apart by the keys
    on which they differ; the architecture is the config whose values there are the constructor's
    defaults (a model class's defaults are the authors' network, DESIGN.md), the others are its
    variants. Where no config (or more than one) matches, each config counts as its own.
    """
    by_class: dict[type, list[str]] = {}
    for name in model_names(conf_dir):
        by_class.setdefault(config_class("model", name, conf_dir), []).append(name)
    kept: list[str] = []
    for cls, names in by_class.items():
        matching = _default_configs(cls, names, conf_dir) if len(names) > 1 else names
        kept += matching if len(matching) == 1 else names
    return sorted(kept)


def config_for_target(group: str, target: str, conf_dir: str | Path | None = None) -> dict | None:
    """The shipped `<group>` config (plain, interpolations as written) that builds class `target`,
    the architecture's own config where several do (`architectures`), or None. Looked up once per
    class: every checkpoint read asks it (`segsuite.manifest.upgrade_model_config`)."""
    found = _config_for_target(group, target, str(conf_dir or config_dir()))
    return copy.deepcopy(found)


@functools.cache
def _config_for_target(group: str, target: str, conf_dir: str) -> dict | None:
    names = config_names(group, conf_dir)
    if group == "model":
        preferred = architectures(conf_dir)
        names = preferred + [n for n in names if n not in preferred]
    for name in names:
        cfg = group_config(group, name, conf_dir)
        if cfg.get("_target_") == target:
            return OmegaConf.to_container(cfg)
    return None


def _default_configs(cls: type, names: list[str], conf_dir: str | Path | None) -> list[str]:
    configs = {n: OmegaConf.to_container(model_config(n, conf_dir)) for n in names}
    keys = set().union(*configs.values())
    differing = {k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1}
    parameters = inspect.signature(cls).parameters
    defaults = {k: parameters[k].default for k in differing if k in parameters}
    if len(defaults) < len(differing):  # a differing key the constructor does not take: no verdict
        return []
    return [n for n, c in configs.items() if all(c.get(k) == v for k, v in defaults.items())]


# losses
def loss_class(name: str, conf_dir: str | Path | None = None) -> type:
    """The loss class `loss=<name>` builds."""
    return config_class("loss", name, conf_dir)


def loss_needs_maps(name: str, conf_dir: str | Path | None = None) -> bool:
    """Whether loss `name` takes precomputed ground-truth maps: its class defines `target_fn`."""
    return hasattr(loss_class(name, conf_dir), "target_fn")


def loss_needs_progress(name: str, conf_dir: str | Path | None = None) -> bool:
    """Whether loss `name` follows training progress: its class defines `set_progress`."""
    return hasattr(loss_class(name, conf_dir), "set_progress")


def loss_zero_at_perfect(name: str, conf_dir: str | Path | None = None) -> bool:
    """Whether loss `name` is 0 at a confident perfect prediction (`zero_at_perfect` on its class)."""
    return bool(getattr(loss_class(name, conf_dir), "zero_at_perfect", True))


# datasets
def needs_files(name: str, conf_dir: str | Path | None = None) -> bool:
    """Whether dataset `name` reads files (every dataset but the procedural one: its config has a `root`)."""
    return "root" in group_config("dataset", name, conf_dir)


def own_data(name: str, conf_dir: str | Path | None = None) -> bool:
    """Whether dataset `name` is your own data: its class count is yours to give (`num_classes: ???`)."""
    return OmegaConf.is_missing(group_config("dataset", name, conf_dir), "num_classes")


def official_image_size(name: str, conf_dir: str | Path | None = None) -> tuple[int, int] | None:
    """(H, W) of dataset `name`'s released images, the typical size where they vary
    (`official_image_size` on its class), or None (procedural or your own data)."""
    size = getattr(config_class("dataset", name, conf_dir), "official_image_size", None)
    return None if size is None else (int(size[0]), int(size[1]))
