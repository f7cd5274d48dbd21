"""scripts/compare_runs.py: the table holds each run's own test scores; the figure is written."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from runs import metrics, train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"


def test_table_rows_hold_the_runs_test_scores(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    train(runs[0], "trainer.max_epochs=2")
    train(runs[1], "trainer.max_epochs=3", "seed=7")
    out = tmp_path / "cmp"
    subprocess.run([sys.executable, str(SCRIPT), *map(str, runs), "--labels", "two", "three", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    rows = [line.strip("|").split("|") for line in (out / "table.md").read_text().splitlines()[2:]]
    assert [r[0].strip() for r in rows] == ["two", "three"]
    for run, row, epochs in zip(runs, rows, (2, 3)):
        logged = metrics(run)
        assert row[2].strip() == str(epochs)
        assert row[4].strip() == f"**{100 * logged['test/mIoU']:.1f}**"
        with open(run / "csv" / "metrics.csv") as fh:
            best = max(float(r["val/mIoU"]) for r in csv.DictReader(fh) if r.get("val/mIoU"))
        assert row[3].strip().startswith(f"{100 * best:.1f} (")
    assert (out / "curves.png").stat().st_size > 1000
