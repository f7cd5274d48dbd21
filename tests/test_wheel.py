"""The wheel is the product: build it, install it into a fresh venv, and use it from outside the checkout.

The fresh venv sees the dev venv's dependencies through a `.pth` line naming the dev site-packages. A plain
path line does not process that directory's own `.pth` files, so the dev venv's editable segsuite (its
`_editable_impl_segsuite.pth`) stays off: `segsuite` is the wheel's copy, which the first test checks.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from runs import TINY

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"segsuite-verify-dataset": "verify_dataset", "segsuite-class-weights": "compute_class_weights",
         "segsuite-prepare-voc-aug": "prepare_voc_aug", "segsuite-browse": "browse_dataset",
         "segsuite-compare-runs": "compare_runs", "segsuite-zoo-publish": "zoo_publish"}


class Installed:
    """A wheel built from this checkout, installed with --no-deps into a fresh venv."""

    def __init__(self, root: Path) -> None:
        pytest.importorskip("hatchling", reason="the wheel is built without build isolation (pip install -e .[dev])")
        self.root = root
        wheels = root / "wheels"
        self.check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(REPO)], cwd=root)
        (self.wheel,) = wheels.glob("segsuite-*.whl")
        venv = root / "venv"
        self.check([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
        self.bin = venv / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / "python"
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        self.site = Path(self.out([str(self.python), "-c", purelib]))
        (self.site / "segsuite_dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        self.check([sys.executable, "-m", "pip", "--python", str(self.python), "install", "--no-deps", "-q",
                    str(self.wheel)], cwd=root)
        self.cwd = root / "elsewhere"  # outside the checkout: nothing relative to the repository resolves
        self.cwd.mkdir()

    @staticmethod
    def env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONHASHSEED": "0"}

    def check(self, command: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(command, cwd=cwd or self.cwd, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
        assert proc.returncode == 0, (f"{' '.join(command)} failed ({proc.returncode}):\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    def out(self, command: list[str]) -> str:
        return self.check(command, cwd=self.root).stdout.strip().splitlines()[-1]

    def run(self, code: str) -> str:
        """Last line printed by `code` in the fresh venv's python, run outside the checkout."""
        return self.check([str(self.python), "-c", code]).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    return Installed(tmp_path_factory.mktemp("wheel"))


def wheel_names(installed: Installed) -> list[str]:
    with zipfile.ZipFile(installed.wheel) as wheel:
        return wheel.namelist()


def test_segsuite_is_the_wheels_copy(installed):
    path = Path(installed.run("import segsuite; print(segsuite.__file__)"))
    assert path.is_relative_to(installed.site), path
    assert not path.is_relative_to(REPO)


def test_wheel_ships_configs_zoo_and_docs(installed):
    names = set(wheel_names(installed))
    for name in ("segsuite/conf/train.yaml", "segsuite/conf/zoo/camvid_enet.ckpt", "segsuite/docs/datasets.md",
                 "segsuite/tools/prepare_voc_aug.py"):
        assert name in names
    page = installed.run("from segsuite.utils.docs import doc_path; print(doc_path('datasets.md#camvid'))")
    path, _, anchor = page.partition("#")
    assert Path(path).is_relative_to(installed.site) and Path(path).is_file() and anchor == "camvid"


def test_train_on_builtin_data(installed):
    run_dir = installed.cwd / "run"
    installed.check([str(installed.python), "-m", "segsuite.train", *TINY, "trainer.max_epochs=1",
                     "trainer.limit_train_batches=2", f"hydra.run.dir={run_dir}"])
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_load_zoo_entry_and_predict(installed):
    shape = installed.run("import numpy as np, segsuite; p = segsuite.load('camvid_enet', device='cpu'); "
                          "print(tuple(p.predict(np.zeros((360, 480, 3), np.uint8)).shape))")
    assert shape == "(360, 480)"


@pytest.mark.parametrize("script", sorted(TOOLS))
def test_console_script_help(installed, script):
    proc = installed.check([str(installed.bin / script), "--help"])
    assert proc.stdout.strip()


def test_tools_run_as_modules(installed):
    installed.check([str(installed.python), "-m", "segsuite.tools.prepare_voc_aug", "--help"])


def test_wheel_has_no_test_support(installed):
    """Test-side code (tests/support: dataset trees, drills) is not part of the product."""
    assert not [name for name in wheel_names(installed) if name.startswith("segsuite/testing/")]


def test_no_module_imports_scripts(installed):
    """Nothing in the wheel imports `scripts` or loads a file from a `scripts/` folder of a checkout."""
    offenders = []
    with zipfile.ZipFile(installed.wheel) as wheel:
        for name in wheel.namelist():
            if not name.endswith(".py"):
                continue
            for node in ast.walk(ast.parse(wheel.read(name), name)):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(m == "scripts" or m.startswith("scripts.") for m in modules) or (
                        isinstance(node, ast.Constant) and node.value == "scripts"):
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders
