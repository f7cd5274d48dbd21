"""segsuite.tools.compare_runs: the table holds each run's own test scores; the figure is written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

from runs import metrics, train

SCRIPT = ["-m", "segsuite.tools.compare_runs"]


def test_table_rows_hold_the_runs_test_scores(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    train(runs[0], "trainer.max_epochs=2")
    train(runs[1], "trainer.max_epochs=3", "seed=7")
    out = tmp_path / "cmp"
    subprocess.run([sys.executable, *SCRIPT, *map(str, runs), "--labels", "two", "three", "--out", str(out)],
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

    # boundary scores from an evaluation directory (one per run, '-' for none): an mBF column and a BF table
    names = [key.split("/", 2)[2] for key in metrics(runs[0]) if key.startswith("test/IoU/")]
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    bf = {f"test/BF/{name}": (i + 1) / (len(names) + 2) for i, name in enumerate(names)}
    (evaluation / "metrics.json").write_text(json.dumps({"test/mBF": 0.4321, **bf}))
    subprocess.run([sys.executable, *SCRIPT, *map(str, runs), "--evaluations", str(evaluation), "-",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    lines = (out / "table.md").read_text().splitlines()
    head = [cell.strip() for cell in lines[0].strip("|").split("|")]
    column = head.index("test mBF")
    first, second = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:4])
    assert (first[column], second[column]) == ("43.2", "–")
    bf_head = next(line for line in lines[4:] if line.startswith("| network | BF "))
    order = [cell.strip().removeprefix("BF ") for cell in bf_head.strip("|").split("|")][1:]
    assert sorted(order) == sorted(names)
    bf_row = lines[lines.index(bf_head) + 2]
    assert [cell.strip() for cell in bf_row.strip("|").split("|")][1:] == [f"{100 * bf[f'test/BF/{n}']:.1f}"
                                                                         for n in order]
