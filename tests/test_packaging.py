"""The wheel carries the configs; the entry points find them from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import CONF, REPO


def test_wheel_carries_every_config(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("segsuite-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"segsuite/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)[:5]
    assert "segsuite/train.py" in names


def test_help_from_another_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "segsuite.train", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    groups = {line.split(":")[0]: line.split(":")[1] for line in proc.stdout.splitlines() if ": " in line}
    assert "unet" in groups["model"] and "synthetic" in groups["dataset"] and "lovasz" in groups["loss"]
    assert not (tmp_path / "outputs").exists()
