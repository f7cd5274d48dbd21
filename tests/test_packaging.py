"""The wheel carries the configs (that the entry points find them from any directory: tests/test_help.py)."""

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
