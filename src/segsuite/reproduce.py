"""Check a zoo result on your own copy of the data: `python -m segsuite.reproduce <name> [--retrain]`.

Without `--retrain` it verifies the shipped checkpoint's sha256, evaluates it with
`segsuite.evaluate` on the entry's split and checks every banded metric against `bands.evaluate`.
With `--retrain` it first trains the entry's recipe (same experiment and seed; an entry with
`stages` trains each stage from the previous stage's best weights) and checks the new best
checkpoint against `bands.retrain`. It exits 1 naming each metric outside its band.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir

from segsuite.utils.paths import config_dir
from segsuite.zoo import ZooEntry, available, load_entry, outside_band, verify_checkpoint


def default_data_root(entry: ZooEntry) -> str:
    """The recipe's dataset root under `$SEGSUITE_DATA_DIR` (default `data/`), as training would use it."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={entry.experiment}"])
    return str(cfg.dataset.root)


def run(module: str, overrides: list[str]) -> None:
    """`python -m segsuite.<module> overrides...`, streaming its output; fail naming the command."""
    command = [sys.executable, "-m", f"segsuite.{module}", *overrides]
    print("+ " + " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise SystemExit(f"reproduce: `{' '.join(command)}` failed; see its output above")


def measure(entry: ZooEntry, ckpt: Path, data_root: str, work: Path, extra: list[str]) -> dict[str, float]:
    """Evaluate `ckpt` on the entry's split; return `{metric: value}` with the split prefix dropped."""
    out = work / "evaluate"
    run("evaluate", [f"ckpt_path={ckpt}", f"split={entry.record.split}", f"dataset.root={data_root}",
                     f"hydra.run.dir={out}", "overwrite=true", *extra])
    prefix = f"{entry.record.split}/"
    return {k[len(prefix):]: float(v) for k, v in json.loads((out / "metrics.json").read_text()).items()
            if k.startswith(prefix)}


def reproduce(name: str, data_root: str | None, retrain: bool, work: Path, extra: list[str],
              zoo: Path | None = None) -> list[str]:
    """Run the check; return the failures (empty when every banded metric is inside its band)."""
    entry = load_entry(name, zoo)
    data_root = data_root or default_data_root(entry)
    if not Path(data_root).is_dir():
        raise SystemExit(f"reproduce: dataset root {data_root} does not exist; pass --data-root <dir> or set "
                         f"SEGSUITE_DATA_DIR (docs/datasets.md)")
    if retrain:
        ckpt = None
        for i, experiment in enumerate(entry.stages):  # each stage starts from the previous one's best weights
            train_dir = work / (f"train_{i + 1}_{experiment}" if len(entry.stages) > 1 else "train")
            run("train", [f"experiment={experiment}", f"seed={entry.record.seed}", f"dataset.root={data_root}",
                          f"hydra.run.dir={train_dir}", "test=false", *([f"init_from={ckpt}"] if ckpt else []), *extra])
            ckpt = train_dir / "checkpoints" / "best.ckpt"
        kind = "retrain"
    else:
        verify_checkpoint(entry)
        ckpt, kind = entry.checkpoint, "evaluate"
    measured = measure(entry, ckpt, data_root, work, [] if retrain else extra)
    band = entry.band(kind)
    print(f"\n{name}: {entry.record.dataset} {entry.record.split}, {kind} band")
    for key, (low, high) in band.items():
        value = measured.get(key)
        verdict = "ok" if value is not None and low <= value <= high else "OUTSIDE"
        shown = "missing" if value is None else f"{value:.4f}"
        print(f"  {key:<8} {shown:>8}   band [{low:.4f}, {high:.4f}]   {verdict}")
    return outside_band(measured, band)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m segsuite.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"zoo entry ({', '.join(available()) or 'none'})")
    parser.add_argument("--data-root", help="the dataset's folder (default: the recipe's, under $SEGSUITE_DATA_DIR)")
    parser.add_argument("--retrain", action="store_true", help="train the recipe first and check the new model")
    parser.add_argument("--workdir", type=Path,
                        help="where runs are written (default: outputs/reproduce/<name>/<time>)")
    parser.add_argument("--zoo-dir", type=Path, help="a folder of zoo entries (default: segsuite's conf/zoo)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the runs (e.g. trainer.max_epochs=1)")
    args = parser.parse_intermixed_args(argv)
    log_dir = Path(os.environ.get("SEGSUITE_LOG_DIR", "outputs"))
    work = args.workdir or log_dir / "reproduce" / args.name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        failures = reproduce(args.name, args.data_root, args.retrain, work.resolve(), args.overrides, args.zoo_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"reproduce: {err}", file=sys.stderr)
        return 2
    if failures:
        print(f"\nreproduce {args.name}: FAILED", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"\nreproduce {args.name}: every banded metric is inside its band")
    return 0


if __name__ == "__main__":
    sys.exit(main())
