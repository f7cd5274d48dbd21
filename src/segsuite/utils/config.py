"""Config checks, printing and saving."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def check_required(cfg: DictConfig) -> None:
    """Fail before any work if a required (`???`) value is missing, naming the keys."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"missing required config value(s): {', '.join(missing)}; pass them on the command line, "
            f"e.g. `{missing[0]}=...`"
        )


def print_config_tree(
    cfg: DictConfig, order: Sequence[str] = ("data", "dataset", "model", "loss", "optimizer", "scheduler",
                                              "module", "trainer", "callbacks", "logger", "paths"),
    save_to: Path | None = None,
) -> None:
    """Print the resolved config as a rich tree (main groups first) and save it as text."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as fh:
            rich.print(tree, file=fh)


def save_resolved(cfg: DictConfig, path: Path) -> None:
    """Write the fully resolved config as YAML."""
    from segsuite.utils.safe_io import atomic_write_text  # (torch is imported only where a config is saved)

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
