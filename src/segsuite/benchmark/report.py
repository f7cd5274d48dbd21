"""The report: targets gathered from every section, benchmark.json and benchmark.md."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from segsuite.benchmark import data, loop, losses, machine, metrics, models, peak, slide

# the order of the targets table, and of the sections' text after it
TARGET_ORDER = (models, loop, losses, metrics, slide, data)
RENDER_ORDER = (models, data, losses, metrics, loop, slide)


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, ratio text, met) for every target the run measured."""
    return [row for section in TARGET_ORDER for row in section.targets(results)]


def markdown(results: dict[str, Any]) -> str:
    """benchmark.md: the machine, the peak, the targets, then each section's table or paragraph."""
    lines = machine.render(results) + peak.render(results)
    targets = target_rows(results)
    if targets:
        lines += ["| target | measured | ratio | met |", "|---|---|---|---|"]
        lines += [f"| {t} | {m} | {r} | {'yes' if ok else '**no**'} |" for t, m, r, ok in targets]
        lines.append("")
    for section in RENDER_ORDER:
        lines += section.render(results)
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path, started: float) -> None:
    """Write benchmark.json and benchmark.md with the sections measured so far."""
    with contextlib.suppress(OSError):
        results["machine"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    results["seconds"] = time.perf_counter() - started
    results["targets"] = [{"target": t, "measured": m, "ratio": r, "met": ok} for t, m, r, ok in target_rows(results)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "benchmark.md").write_text(markdown(results) + "\n")
