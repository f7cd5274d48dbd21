"""Compare finished training runs: a Markdown table of their test scores and a PNG of their learning curves.

    segsuite-compare-runs <run dir> [<run dir> ...] [--labels A B ...] [--out docs/results/x]
        [--evaluations <evaluate dir> ...]        (or: python -m segsuite.tools.compare_runs ...)

Each run directory is one `segsuite.train` run (its `metrics.json`, `csv/metrics.csv`,
`config.yaml` and `checkpoints/best.ckpt`). The table has one row per run: parameters, epochs,
best validation mIoU and its epoch, test mIoU / mAcc / aAcc (the best checkpoint, as the run tested
it) and the test IoU of every class; with boundary scores (`test/mBF`, from a run trained with
`metrics.boundary=true`, or from `--evaluations`: one `segsuite.evaluate split=test metrics.boundary=true`
output directory per run, `-` for none), an mBF column and the BF of every class. The figure plots
validation mIoU against the share of each run's epochs done, so runs given one time budget with
different epoch counts share an axis.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from segsuite.checkpoint import build_net, load_checkpoint
from segsuite.manifest import RunManifest
from segsuite.module import VAL_SCORES_KEY


def val_curve(run: Path) -> list[tuple[int, float]]:
    """(epoch, val mIoU) per validation, from the run's CSV log."""
    with open(run / "csv" / "metrics.csv") as fh:
        return [(int(row["epoch"]), float(row["val/mIoU"])) for row in csv.DictReader(fh) if row.get("val/mIoU")]


def summary(run: Path, label: str, evaluation: Path | None = None) -> dict:
    """What the table shows of one run (boundary scores from its own test or from `evaluation`'s)."""
    metrics = json.loads((run / "metrics.json").read_text())
    if evaluation is not None:
        evaluated = json.loads((evaluation / "metrics.json").read_text())
        metrics.update({k: v for k, v in evaluated.items() if k == "test/mBF" or k.startswith("test/BF/")})
    config = OmegaConf.load(run / "config.yaml")
    curve = val_curve(run)
    ckpt = load_checkpoint(run / "checkpoints" / "best.ckpt")
    stored = ckpt.get(VAL_SCORES_KEY)  # the epoch and scores of best.ckpt itself, resumes included
    best_epoch, best_val = ((int(ckpt["epoch"]), float(stored["scores"]["miou"])) if stored
                            else max(curve, key=lambda point: point[1]))
    net = build_net(ckpt)
    names = RunManifest.from_checkpoint(ckpt).class_names  # label order
    return {"label": label, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "epochs": int(config.trainer.max_epochs), "best_val": best_val, "best_epoch": best_epoch + 1,
            "test_miou": metrics["test/mIoU"], "test_macc": metrics["test/mAcc"], "test_aacc": metrics["test/aAcc"],
            "iou": {n: metrics[f"test/IoU/{n}"] for n in names}, "curve": curve,
            "mbf": metrics.get("test/mBF"), "bf": {n: metrics.get(f"test/BF/{n}") for n in names}}


def table(rows: list[dict]) -> str:
    """The Markdown table (percentages with one decimal)."""
    classes = list(rows[0]["iou"])
    boundary = any(r["mbf"] is not None for r in rows)
    head = ["network", "params (M)", "epochs", "best val mIoU (epoch)", "test mIoU", "test mAcc", "test aAcc",
            *(["test mBF"] if boundary else []), *classes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], f"{r['params_m']:.2f}", str(r["epochs"]), f"{100 * r['best_val']:.1f} ({r['best_epoch']})",
                 f"**{100 * r['test_miou']:.1f}**", f"{100 * r['test_macc']:.1f}", f"{100 * r['test_aacc']:.1f}",
                 *([_percent(r["mbf"])] if boundary else []), *(f"{100 * r['iou'][c]:.1f}" for c in classes)]
        lines.append("| " + " | ".join(cells) + " |")
    if boundary:  # per-class BF, a second table of the same rows
        lines += ["", "| network | " + " | ".join(f"BF {c}" for c in classes) + " |", "|" + "---|" * (len(classes) + 1)]
        lines += ["| " + " | ".join([r["label"], *(_percent(r["bf"][c]) for c in classes)]) + " |" for r in rows]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Validation mIoU against the share of the run's epochs done."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        xs = [(epoch + 1) / r["epochs"] for epoch, _ in r["curve"]]
        ax.plot(xs, [100 * v for _, v in r["curve"]], marker="o", markersize=2.5,
                label=f"{r['label']} ({r['epochs']} ep)")
    ax.set_xlabel("share of the training budget done (epochs / total epochs)")
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of segsuite.train")
    parser.add_argument("--labels", nargs="+", help="a name per run (default: the run's task_name)")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare_runs"),
                        help="folder for table.md and curves.png")
    parser.add_argument("--title", default="validation mIoU during training")
    parser.add_argument("--evaluations", nargs="+", type=Path,
                        help="per run, a segsuite.evaluate output dir (split=test metrics.boundary=true) or '-'")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"{len(args.labels)} labels for {len(args.runs)} runs")
    labels = args.labels or [str(OmegaConf.load(run / "config.yaml").task_name) for run in args.runs]
    if args.evaluations and len(args.evaluations) != len(args.runs):
        parser.error(f"{len(args.evaluations)} evaluations for {len(args.runs)} runs")
    evaluations = [None if str(e) == "-" else e for e in args.evaluations or [None] * len(args.runs)]
    rows = [summary(run, label, evaluation) for run, label, evaluation in zip(args.runs, labels, evaluations)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table(rows) + "\n")
    plot(rows, args.out / "curves.png", args.title)
    print(table(rows))
    print(f"wrote {args.out / 'table.md'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
