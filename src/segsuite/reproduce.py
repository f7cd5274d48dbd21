"""Check a zoo result on your own copy of the data: `python -m segsuite.reproduce <name> [--retrain]`.

First it checks that your copy of the entry's split is the data the entry was measured on (image
count and fingerprint of the labels, `data` in the entry; an entry without one is noted and not
checked). Without `--retrain` it then verifies the shipped checkpoint's sha256, evaluates it with
`segsuite.evaluate` on the entry's split and checks every banded metric against `bands.evaluate`.
With `--retrain` it first trains the entry's recipe (same experiment and seed; an entry with
`stages` trains each stage from the previous stage's best weights) and checks the new best
checkpoint against `bands.retrain`.

Exit status: 0 every banded metric is inside its band; 1 a metric is outside its band (each is
named); 2 it could not check (unknown or damaged entry, changed checkpoint, no data, a command
failed); 3 your data differ from the entry's (images missing or extra, labels changed): no band
verdict is given, since the metrics of other data need not fall in the bands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from segsuite.utils.docs import doc_path
from segsuite.utils.failures import describe_error
from segsuite.utils.paths import config_dir
from segsuite.zoo import (
    ZooEntry,
    available,
    data_differences,
    label_lines,
    load_entry,
    outside_band,
    shown_value,
    verify_checkpoint,
)

DATA_DIFFER = 3  # exit status: your data are not the data the entry was measured on


class ReproduceError(Exception):
    """A check that could not be made; its message says why."""


class DataDiffer(ReproduceError):
    """Your copy of the split is not what the entry was measured on."""


def recipe_config(experiment: str, data_root: str | None = None) -> DictConfig:
    """The training config of `experiment=`, with the dataset at `data_root` when given."""
    overrides = [f"experiment={experiment}", *([f"dataset.root={data_root}"] if data_root else [])]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides)


def default_data_root(entry: ZooEntry) -> str:
    """The recipe's dataset root under `$SEGSUITE_DATA_DIR` (default `data/`), as training would use it."""
    return str(recipe_config(entry.experiment).dataset.root)


def split_label_lines(experiment: str, split: str, data_root: str) -> list[str]:
    """`zoo.label_lines` of the `split` of the recipe's dataset at `data_root` (what a zoo entry's data fingerprint
    is computed over; images without their label, or labels without their image, are left out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unpaired files: left out, so they count as missing
        dataset = instantiate(recipe_config(experiment, data_root).dataset[split], skip_bad=True)
    if not hasattr(dataset, "samples"):
        raise ValueError(f"{type(dataset).__name__} lists no image and label files; its data cannot be fingerprinted")
    # links that cannot be followed (listed so that training names them) count as missing, as before
    return label_lines((sample.name, sample.mask) for sample in dataset.samples
                       if Path(sample.mask).is_file() and Path(sample.image).is_file())


def check_data(entry: ZooEntry, data_root: str, zoo: Path | None = None) -> None:
    """Raise `DataDiffer` naming what differs when your copy of the entry's split is not the data the entry
    was measured on; print what was checked. Hashes the split's label files (CamVid test: about a second)."""
    recorded = entry.record.get("data")
    if recorded is None:
        print(f"note: zoo entry {entry.name!r} records no data fingerprint; your {entry.record.split} split is not "
              f"checked against the data it was measured on", flush=True)
        return
    split = str(recorded.split)
    lines = split_label_lines(entry.experiment, split, data_root)
    difference = data_differences(entry, lines, zoo)
    if difference:
        raise DataDiffer(f"{difference}. Restore the {split} split ({doc_path('datasets.md')}); no band verdict "
                         f"is given on other data")
    print(f"data: {len(lines)} {split} images, the ones the entry was measured on", flush=True)


def run(module: str, overrides: list[str]) -> None:
    """`python -m segsuite.<module> overrides...`, streaming its output; fail naming the command."""
    command = [sys.executable, "-m", f"segsuite.{module}", *overrides]
    print("+ " + " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise ReproduceError(f"`{' '.join(command)}` failed; see its output above")


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
        raise FileNotFoundError(f"dataset root {data_root} does not exist; pass --data-root <dir> or set "
                                f"SEGSUITE_DATA_DIR ({doc_path('datasets.md')})")
    check_data(entry, data_root, zoo)
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
        shown = "missing" if value is None else shown_value(value, low, high)
        print(f"  {key:<8} {shown:>9}   band [{low:.4f}, {high:.4f}]   {verdict}")
    return outside_band(measured, band)


EXAMPLES = """Examples:
  python -m segsuite.reproduce camvid_enet                           # the shipped checkpoint on your CamVid copy
  python -m segsuite.reproduce camvid_enet --data-root /data/CamVid  # your copy elsewhere
  python -m segsuite.reproduce camvid_enet --retrain trainer=gpu     # train the recipe again, then check it"""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m segsuite.reproduce", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    existed = work.exists()
    try:
        failures = reproduce(args.name, args.data_root, args.retrain, work.resolve(), args.overrides, args.zoo_dir)
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not existed and work.is_dir() and not any(work.iterdir()):
            shutil.rmtree(work, ignore_errors=True)  # a failed check leaves no empty run folder behind
        message = str(err) if isinstance(err, ReproduceError) else describe_error(err)
        print(f"error: {message}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
        return DATA_DIFFER if isinstance(err, DataDiffer) else 2
    if failures:
        print(f"\nreproduce {args.name}: FAILED", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"\nreproduce {args.name}: every banded metric is inside its band")
    return 0


if __name__ == "__main__":
    sys.exit(main())
