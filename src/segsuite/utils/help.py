"""The parts of `python -m segsuite.<command> --help` that come from the configs themselves.

Each command's help (`conf/hydra/help/<command>.yaml`, on `conf/hydra/help/segsuite.yaml`'s template)
says what the command does and gives examples; its config groups and its own options are read here
from `conf/` (`${segsuite_help:groups,<command>}`, `${segsuite_help:options,<command>}`), so the help
lists what exists and nothing that is gone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from segsuite import catalog
from segsuite.utils.paths import config_dir

SKIPPED_BLOCKS = ("defaults", "hydra")  # keys of a primary config that are no option of the command


def groups_text(command: str, conf_dir: str | Path | None = None) -> str:
    """One line per group the command composes: its options, the default marked with `*`."""
    lines = []
    for group, default in catalog.command_groups(command, conf_dir).items():
        names = catalog.config_names(group, conf_dir)
        shown = [f"{name}*" if name == default else name for name in names]
        if default is None:
            shown.insert(0, "null*")
        lines.append(textwrap.fill(", ".join(shown), width=100, initial_indent=f"  {group:<15}",
                                   subsequent_indent=" " * 17, break_on_hyphens=False))
    return "\n".join(lines)


def options_text(command: str, conf_dir: str | Path | None = None) -> str:
    """The command's own options as its primary config writes them (value and comment), without the
    file's opening comment, its defaults list and its `hydra:` settings."""
    lines, block = [], None
    for line in (Path(conf_dir or config_dir()) / f"{command}.yaml").read_text().splitlines():
        if not line.strip():
            continue
        if not line[0].isspace() and not line.startswith("#"):
            block = line.split(":", 1)[0].strip()
        if block is not None and block not in SKIPPED_BLOCKS:
            lines.append(f"  {line}")
    return "\n".join(lines)


SECTIONS = {"groups": groups_text, "options": options_text}


def help_section(section: str, command: str) -> str:
    """The `segsuite_help` resolver: `section` ("groups" | "options") of `command`'s help, its `$` doubled
    (Hydra fills the help template with `string.Template`, where a single `$` starts a placeholder)."""
    return SECTIONS[section](command).replace("$", "$$")
