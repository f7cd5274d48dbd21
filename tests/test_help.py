"""`python -m segsuite.<command> --help` says what the command does, lists its config groups (read from
conf/ by the catalog: never the data folders `zoo` and `pretrained`) and its options, and gives three
examples.

Each help's text is checked in-process (Hydra's template filled as `--help` fills it, a fraction of a second);
each command runs `--help` as a subprocess too (seconds of importing torch and Lightning each): train's in the
fast suite, the others behind the slow marker.
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys

import pytest

from segsuite import catalog
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers

# what each command's help must say it does
DESCRIPTIONS = {
    "train": "train a segmentation model",
    "evaluate": "score a checkpoint",
    "predict": "segment new images",
    "export": "ONNX or TorchScript",
}
REPRODUCE = "Check a zoo result on your own copy of the data"


def help_text(compose_cfg, command: str) -> str:
    """The command's `--help` text, as Hydra's `--help` fills the template (segsuite's help uses none of
    Hydra's `$` placeholders)."""
    register_resolvers()
    template = compose_cfg(command, return_hydra_config=True).hydra.help.template
    return string.Template(template).substitute(FLAGS_HELP="", HYDRA_CONFIG_GROUPS="", APP_CONFIG_GROUPS="", CONFIG="")


def command_help(command: str, cwd) -> str:
    """`python -m segsuite.<command> --help` in `cwd`; asserts it exits 0 and returns its output."""
    proc = subprocess.run([sys.executable, "-m", f"segsuite.{command}", "--help"], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def section(text: str, title: str) -> list[str]:
    """The lines of the help's `== <title> ==` section, up to the next section or blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title} =="))
    body = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("=="):
            break
        body.append(line)
    return body


def groups_listed(text: str) -> dict[str, list[str]]:
    """The help's config groups, in order, each with its options as listed (the default ends in `*`)."""
    listed: dict[str, str] = {}
    group = ""
    for line in section(text, "Config groups"):
        if re.match(r"  \S", line):
            group, _, options = line.strip().partition(" ")
            listed[group] = options
        else:
            listed[group] += " " + line.strip()
    return {group: [name.strip() for name in names.split(",")] for group, names in listed.items()}


def examples(lines: list[str], command: str) -> list[str]:
    return [line for line in lines if line.strip().startswith(f"python -m segsuite.{command} ")]


def test_every_hydra_command_has_a_description():
    assert sorted(DESCRIPTIONS) == catalog.commands()


@pytest.mark.parametrize("command", sorted(DESCRIPTIONS))
def test_help_describes_the_command_its_groups_and_three_examples(compose_cfg, command):
    text = help_text(compose_cfg, command)
    assert DESCRIPTIONS[command] in text.splitlines()[0]
    listed, groups = groups_listed(text), catalog.command_groups(command)
    assert list(listed) == list(groups)
    assert "zoo" not in listed and "pretrained" not in listed
    for group, default in groups.items():  # every option, the default marked
        options = [p.stem for p in (config_dir() / group).glob("*.yaml") if p.stem != default]
        assert sorted(listed[group]) == sorted([f"{default or 'null'}*", *options]), listed[group]
    assert section(text, "Options"), "no options listed"
    assert "defaults:" not in text and "hydra:" not in text  # the command's own options only
    assert len(examples(section(text, "Examples"), command)) == 3


def test_the_helps_list_every_group_and_no_data_folder():
    """Every folder of conf/ holding configs is a group some command lists, except Hydra's own and the
    data folders read by code (`zoo`: the model zoo; `pretrained`: weight names and URLs)."""
    folders = {p.parent.name for p in config_dir().glob("*/*.yaml")}
    assert set(catalog.config_groups()) == folders - {"hydra", "zoo", "pretrained"}


@pytest.mark.parametrize("command", [
    "train", *(pytest.param(c, marks=pytest.mark.slow) for c in sorted(DESCRIPTIONS) if c != "train")])
def test_help_runs_from_another_directory_and_writes_nothing(compose_cfg, command, tmp_path):
    text = command_help(command, tmp_path)
    assert text.strip() == help_text(compose_cfg, command).strip()
    assert not any(tmp_path.iterdir())  # no outputs/ run directory


def test_reproduce_help_describes_it_with_three_examples(capsys):
    from segsuite.reproduce import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert REPRODUCE in text and "Exit status" in text and "Examples:" in text
    assert len(examples(text.split("Examples:", 1)[1].splitlines(), "reproduce")) == 3


@pytest.mark.slow
def test_reproduce_help_runs_as_a_command(tmp_path):
    text = command_help("reproduce", tmp_path)
    assert REPRODUCE in text and len(examples(text.split("Examples:", 1)[1].splitlines(), "reproduce")) == 3
