#!/usr/bin/env python3
"""Where a training epoch's time goes: data, host-to-model copy, forward + loss, backward, optimizer,
validation, checkpointing and the rest (callbacks, logging, loop), as seconds and shares of an epoch.

    python scripts/epoch_profile.py experiment=camvid_enet dataset.root=data/CamVid [--epochs 3]

Runs `python -m segsuite.train <overrides>` twice under Lightning's SimpleProfiler, for 1 and for
1 + --epochs epochs, and reports the difference divided by --epochs: the steady epochs, without the
one-off costs of the first (torch.compile, worker start-up, caches). A short run before them fills
torch.compile's cache, so that both pay the same compile cost. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROW = re.compile(r"^\|\s*(?P<action>.+?)\s*\|\s*(?P<mean>[-\d.e+]+)\s*\|\s*(?P<calls>\d+)\s*\|"
                 r"\s*(?P<total>[\d.e+-]+)\s*\|")


def read_report(path: Path) -> dict[str, tuple[int, float]]:
    """{action: (calls, total seconds)} of a SimpleProfiler report file."""
    rows = {}
    for line in path.read_text().splitlines():
        if (match := ROW.match(line.replace("\t", ""))) and match["action"] != "Total":
            rows[match["action"]] = (int(match["calls"]), float(match["total"]))
    return rows


def profile(overrides: list[str], epochs: int, workdir: Path, name: str) -> dict[str, tuple[int, float]]:
    """Train for `epochs` epochs under SimpleProfiler; its fit report's rows."""
    run_dir = workdir / name
    command = [sys.executable, "-m", "segsuite.train", *overrides, f"trainer.max_epochs={epochs}",
               "+trainer.profiler._target_=pytorch_lightning.profilers.SimpleProfiler",
               f"+trainer.profiler.dirpath={run_dir}", "+trainer.profiler.filename=profile",
               "trainer.limit_test_batches=0", f"hydra.run.dir={run_dir}"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return read_report(run_dir / "fit-profile.txt")


def total(rows: dict[str, tuple[int, float]], pattern: str) -> tuple[int, float]:
    """Calls and seconds summed over the actions matching `pattern` (a regular expression)."""
    hits = [value for action, value in rows.items() if re.search(pattern, action)]
    return sum(c for c, _ in hits), sum(t for _, t in hits)


def phases(rows: dict[str, tuple[int, float]]) -> dict[str, float]:
    """Seconds per phase; the phases add up to the epoch loop's time."""
    train_batches, train_fetch = total(rows, r"^\[_TrainingEpochLoop\]\.train_dataloader_next$")
    copies, copy_time = total(rows, r"\.batch_to_device$")
    train_copy = copy_time * train_batches / max(copies, 1)  # train and val batches are the same size
    forward = total(rows, r"^\[Strategy\]\w+\.training_step$")[1]
    backward = total(rows, r"^\[Strategy\]\w+\.backward$")[1]
    step_hooks = total(rows, r"^\[(Callback|LightningModule)\].*\.(on_before_backward|on_after_backward|"
                             r"on_before_optimizer_step|configure_gradient_clipping)$")[1]
    # Lightning's optimizer_step runs the closure: training_step, zero_grad, backward and their hooks
    optimizer = (total(rows, r"^\[LightningModule\]\w+\.optimizer_step$")[1] - forward - backward - step_hooks
                 + total(rows, r"\.lr_scheduler_step$")[1])
    validation = (total(rows, r"^\[_EvaluationLoop\]\.val_next$")[1] + copy_time - train_copy
                  + total(rows, r"\.validation_step$")[1] + total(rows, r"\.on_validation_epoch_end$")[1])
    checkpoint = total(rows, r"\.on_validation_end$")[1] + total(rows, r"\.on_train_epoch_end$")[1]
    epoch = total(rows, r"^run_training_epoch$")[1]
    parts = {"data loading (waiting for the next batch)": train_fetch, "host-to-model copy + normalisation": train_copy,
             "forward + loss": forward, "backward": backward, "optimizer step (+ zero_grad, schedule)": optimizer,
             "validation": validation, "checkpointing (+ end-of-validation checks)": checkpoint}
    parts["callbacks, logging, loop"] = epoch - sum(parts.values())
    parts["epoch"] = epoch
    parts["train batches"] = train_batches
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="steady epochs measured after the first")
    args, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        profile([*overrides, "trainer.limit_train_batches=2", "trainer.limit_val_batches=2"], 1, Path(tmp), "warmup")
        first = phases(profile(overrides, 1, Path(tmp), "first"))
        more = phases(profile(overrides, 1 + args.epochs, Path(tmp), "more"))
    steady = {name: (more[name] - first[name]) / args.epochs for name in first}
    epoch, batches = steady.pop("epoch"), steady.pop("train batches")
    print(f"\nsteady epoch: {epoch:.1f} s, {batches:.0f} train batches; first epoch: {first['epoch']:.1f} s\n")
    print("| phase | s / epoch | share | ms / train batch |\n|---|---:|---:|---:|")
    for name, seconds in steady.items():
        print(f"| {name} | {seconds:.2f} | {100 * seconds / epoch:.1f}% | {1000 * seconds / max(batches, 1):.0f} |")


if __name__ == "__main__":
    main()
