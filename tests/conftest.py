"""Shared fixtures: composing the shipped configs; the test side on the path of subprocess runs.

Test-side helpers live in `tests/support/` (`import support.dataset_trees`; pyproject.toml puts
`tests/` on the path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from segsuite.utils.paths import config_dir

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONF = config_dir()


@pytest.fixture
def support_on_pythonpath(monkeypatch):
    """Runs started as subprocesses can import the test side (`support.drills`): `tests/` on PYTHONPATH."""
    paths = [str(REPO / "tests"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


@pytest.fixture
def compose_cfg():
    """compose_cfg(config_name, overrides) -> DictConfig composed from the shipped conf/."""

    def _compose(config_name: str = "train", overrides: list[str] | None = None, return_hydra_config: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()
