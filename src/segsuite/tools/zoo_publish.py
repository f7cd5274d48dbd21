"""Publish a trained run as a zoo entry, with its results page's figures and tables.

    segsuite-zoo-publish camvid_enet --train-run <train run dir> --eval-run <evaluate run dir> \
        [--tta-eval-run <dir>] --train-time-s 6000 --machine "..." --commit <sha> --data-dir <prefix>

Writes `conf/zoo/<name>.ckpt` (the run's best checkpoint without optimizer state), `conf/zoo/<name>.yaml`
(metrics of the evaluate run, per-class scores, bands, sha256, provenance, and the data they were measured
on: the split's image count and label fingerprint, with the per-label list in `conf/zoo/data/`), and under
`<docs>/results/<name>/` (`--docs-dir`, default: segsuite's docs/ folder): `learning_curve.png` (val mIoU
and losses per epoch from the run's CSV log), `confusion_matrix.png` (from the evaluate run), `samples.png`
(test images | ground truth | prediction, from the evaluate run's saved predictions), and the generated
tables between the markers of `<docs>/results/<name>.md`. Also `python -m segsuite.tools.zoo_publish ...`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from segsuite.checkpoint import load_checkpoint
from segsuite.reproduce import split_label_lines
from segsuite.utils.docs import docs_dir
from segsuite.utils.visualize import colorize, image_grid, save_rgb
from segsuite.zoo import data_record, sha256_of, slim_checkpoint, zoo_dir

BEGIN, END = "<!-- BEGIN GENERATED: segsuite-zoo-publish -->", "<!-- END GENERATED -->"
SUMMARY = {"mIoU": "mIoU", "mAcc": "class-average accuracy", "aAcc": "global accuracy", "fwIoU": "fwIoU"}


def read_eval(run: Path, split: str) -> dict[str, float]:
    """`{metric: value}` of an evaluate run's metrics.json, without the split prefix."""
    data = json.loads((run / "metrics.json").read_text())
    return {k[len(split) + 1:]: float(v) for k, v in data.items() if k.startswith(f"{split}/")}


def epoch_rows(run: Path) -> list[dict[str, float]]:
    """Per epoch: val mIoU, val loss and the mean training loss, from the CSV logger's file."""
    rows: dict[int, dict[str, float]] = {}
    with open(run / "csv" / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            entry = rows.setdefault(int(row["epoch"]), {})
            for key in ("val/mIoU", "val/loss", "train/loss_epoch"):
                if row.get(key):
                    entry[key] = float(row[key])
    return [{"epoch": e + 1, **v} for e, v in sorted(rows.items())]


def plot_learning_curve(rows: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    val = [r for r in rows if "val/mIoU" in r]
    left.plot([r["epoch"] for r in val], [100 * r["val/mIoU"] for r in val], color="tab:blue")
    best = max(val, key=lambda r: r["val/mIoU"])
    left.scatter([best["epoch"]], [100 * best["val/mIoU"]], color="tab:red", zorder=3,
                 label=f"best {100 * best['val/mIoU']:.1f} (epoch {best['epoch']})")
    left.set(xlabel="epoch", ylabel="val mIoU (%)", title="validation mIoU")
    left.grid(alpha=0.3)
    left.legend(loc="lower right")
    for key, label in (("train/loss_epoch", "train loss"), ("val/loss", "val loss")):
        points = [r for r in rows if key in r]
        right.plot([r["epoch"] for r in points], [r[key] for r in points], label=label)
    right.set(xlabel="epoch", ylabel="weighted cross-entropy", title="loss")
    right.grid(alpha=0.3)
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_grid(eval_run: Path, data_root: Path, split: str, palette: list, names: list[str], path: Path) -> None:
    """Rows of image | ground truth | prediction for `names` (CamVid layout: <split>/ and <split>annot/)."""
    rows = []
    for name in names:
        image = np.asarray(Image.open(data_root / split / f"{name}.png").convert("RGB"))
        label = np.asarray(Image.open(data_root / f"{split}annot" / f"{name}.png")).copy()
        label[label >= len(palette)] = 255
        pred = np.asarray(Image.open(eval_run / "predictions" / "palette" / f"{name}.png"))
        rows.append([image, colorize(label, palette), colorize(pred, palette)])
    save_rgb(image_grid(rows), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--train-run", type=Path, required=True)
    parser.add_argument("--eval-run", type=Path, required=True,
                        help="evaluate run on the entry's split, save_predictions=true")
    parser.add_argument("--tta-eval-run", type=Path, help="the same evaluation with test-time augmentation")
    parser.add_argument("--split", default="test")
    parser.add_argument("--train-time-s", type=float, nargs="+", required=True, help="one per stage")
    parser.add_argument("--stages", nargs="+", help="the recipes that trained it in turn (each from the previous best)")
    parser.add_argument("--stage-epochs", nargs="+", help="epochs of each stage")
    parser.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW",
                        help="rewrite these path prefixes in the stored config (e.g. the training checkout)")
    parser.add_argument("--epoch-offset", type=int, default=0, help="epochs before the train run (earlier stages)")
    parser.add_argument("--machine", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--data-dir", required=True, help="data dir prefix of the training machine (made relative)")
    parser.add_argument("--data-root", type=Path, required=True, help="the dataset's folder (for the sample images)")
    parser.add_argument("--samples", nargs="+", default=["0001TP_009720", "Seq05VD_f01710", "Seq05VD_f04110"])
    parser.add_argument("--eval-tolerance", type=float, default=0.002)
    parser.add_argument("--retrain-tolerance", type=float, default=0.02)
    parser.add_argument("--docs-dir", type=Path, default=docs_dir(),
                        help="docs folder that receives results/<name>/ and results/<name>.md")
    args = parser.parse_args(argv)
    if args.docs_dir is None:
        parser.error("no docs/ folder found next to segsuite; pass --docs-dir")

    ckpt_out = zoo_dir() / f"{args.name}.ckpt"
    rename = dict(pair.split("=", 1) for pair in args.rename)
    slim_checkpoint(args.train_run / "checkpoints" / "best.ckpt", ckpt_out, data_dir=args.data_dir, rename=rename)
    ckpt = load_checkpoint(ckpt_out)
    info = ckpt["segsuite"]
    names, palette = list(info["class_names"]), [list(c) for c in info["palette"]]
    measured = read_eval(args.eval_run, args.split)
    summary = {k: round(measured[k], 4) for k in SUMMARY}
    per_class = {n: {"iou": round(measured[f"IoU/{n}"], 4), "acc": round(measured[f"Acc/{n}"], 4)} for n in names}
    config = info["config"]
    record = {
        "experiment": config["task_name"], "checkpoint": ckpt_out.name, "sha256": sha256_of(ckpt_out),
        "dataset": config["dataset"]["name"], "split": args.split,
        "resolution": list(config["dataset"]["crop_size"]), "tta": "none",
        "metrics": summary, "per_class": per_class,
        "bands": {
            "evaluate": {k: [round(v - args.eval_tolerance, 4), round(v + args.eval_tolerance, 4)]
                         for k, v in summary.items()},
            "retrain": {"mIoU": [round(summary["mIoU"] - args.retrain_tolerance, 4),
                                 round(summary["mIoU"] + args.retrain_tolerance, 4)]},
        },
        "command": stage_commands(args.stages or [config["task_name"]]),
        "seed": int(config["seed"]), "epochs": int(config["trainer"]["max_epochs"]),
        "best_epoch": int(ckpt.get("epoch", -1)) + 1, "precision": str(config["trainer"]["precision"]),
        "parameters": int(sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("net.")
                              and v.is_floating_point() and "running_" not in k)),
        "train_time_s": round(sum(args.train_time_s)), "machine": args.machine, "commit": args.commit,
    }
    if args.stages:
        record["stages"] = list(args.stages)
        record["stage_train_time_s"] = [round(t) for t in args.train_time_s]
        record["epochs"] = [int(e) for e in args.stage_epochs] if args.stage_epochs else record["epochs"]
    record["data"] = data_block(args.name, record["dataset"], args.split,
                                split_label_lines(record["experiment"], args.split, str(args.data_root)))
    if args.tta_eval_run:
        tta = read_eval(args.tta_eval_run, args.split)
        record["tta_metrics"] = {"tta": json.loads((args.tta_eval_run / "metrics.json").read_text())["tta"],
                                 **{k: round(tta[k], 4) for k in SUMMARY}}
    entry_path = zoo_dir() / f"{args.name}.yaml"
    header = (f"# Model-zoo entry written by segsuite-zoo-publish (seed {record['seed']}): {record['command']}\n"
              f"# evaluated on the {args.split} split. Check it: python -m segsuite.reproduce {args.name}\n")
    entry_path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(record)))

    figures = args.docs_dir / "results" / args.name
    figures.mkdir(parents=True, exist_ok=True)
    rows = [{**r, "epoch": r["epoch"] + args.epoch_offset} for r in epoch_rows(args.train_run)]
    title = f"{args.name}: {record['command']}" if not args.stages else f"{args.name}, last stage: {args.stages[-1]}"
    plot_learning_curve(rows, figures / "learning_curve.png", title)
    shutil.copyfile(args.eval_run / "confusion_matrix.png", figures / "confusion_matrix.png")
    sample_grid(args.eval_run, args.data_root, args.split, palette, args.samples, figures / "samples.png")
    write_tables(args.docs_dir / "results" / f"{args.name}.md", record)
    print(f"wrote {entry_path}, {ckpt_out} ({ckpt_out.stat().st_size / 1e6:.2f} MB) and {figures}")
    return 0


def data_block(name: str, dataset: str, split: str, lines: list[str]) -> dict:
    """The entry's `data` record; its per-label list goes to `conf/zoo/data/<dataset>_<split>.txt` (shared by
    entries measured on the same files; `<name>_<split>.txt` where that file lists other data)."""
    text = "".join(f"{line}\n" for line in lines)
    listing = zoo_dir() / "data" / f"{dataset}_{split}.txt"
    if listing.is_file() and listing.read_text() != text:
        listing = listing.with_name(f"{name}_{split}.txt")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(text)
    return {**data_record(split, lines), "labels": listing.relative_to(zoo_dir()).as_posix()}


def stage_commands(stages: list[str]) -> str:
    """The training command(s): one per stage, each later stage starting from the previous stage's best."""
    commands = [f"python -m segsuite.train experiment={stages[0]}"]
    for previous, stage in itertools.pairwise(stages):
        commands.append(f"python -m segsuite.train experiment={stage} init_from=<{previous} run>/checkpoints/best.ckpt")
    return "; ".join(commands)


def write_tables(page: Path, record: dict) -> None:
    """Replace the generated block of `page` by the summary and per-class tables of `record`."""
    lines = ["| metric | value (%) |", "|---|---|"]
    lines += [f"| {label} | {100 * record['metrics'][key]:.1f} |" for key, label in SUMMARY.items()]
    lines += ["", "| class | IoU (%) | accuracy (%) |", "|---|---|---|"]
    lines += [f"| {name} | {100 * s['iou']:.1f} | {100 * s['acc']:.1f} |" for name, s in record["per_class"].items()]
    block = "\n".join([BEGIN, *lines, END])
    text = page.read_text() if page.exists() else f"{BEGIN}\n{END}\n"
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    page.write_text(text[:start] + block + text[stop:])


if __name__ == "__main__":
    sys.exit(main())
