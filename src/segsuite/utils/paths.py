"""Locating the packaged Hydra configs."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The `conf/` directory: inside the installed package (wheel) or at the repository root."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"segsuite's configs were not found in {package / 'conf'} or {package.parents[1] / 'conf'}; "
        "reinstall the package (`make install`)."
    )
