"""Where segsuite's documentation lives: the one place messages ask for a page's path.

A wheel ships `docs/` as `segsuite/docs/` (pyproject: force-include), a checkout keeps it at the
repository root; `doc_path("datasets.md#camvid")` names the page that is installed, so an error
message points at a file the reader has, not at `docs/…` of a checkout they may not have.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
MARKER = "datasets.md"  # a page every docs/ folder of segsuite holds


def docs_dir() -> Path | None:
    """The installed `docs/` folder: inside the package (wheel) or at the repository root; None if neither."""
    for candidate in (PACKAGE / "docs", PACKAGE.parents[1] / "docs"):
        if (candidate / MARKER).is_file():
            return candidate
    return None


def doc_path(page: str) -> str:
    """`page` ("datasets.md" or "datasets.md#your-own-data") as the installed file's path, anchor kept.

    Without an installed docs/ folder the page is named as `segsuite docs/<page>`, so a message never fails.
    """
    name, sep, anchor = page.partition("#")
    folder = docs_dir()
    if folder is None:
        return f"segsuite docs/{page}"
    return f"{folder / name}{sep}{anchor}"
