#!/usr/bin/env python
"""Train every loss (or every architecture) on the built-in dataset with one fixed budget.

    python scripts/convergence_matrix.py losses   [--epochs 6] [--extra key=value ...]
    python scripts/convergence_matrix.py models   [--epochs 6] [--only unet,pspnet]

The tables in docs/results/builtin.md come from
    python scripts/convergence_matrix.py losses --epochs 4 --extra dataset.train.num_images=500
    python scripts/convergence_matrix.py models --epochs 8 --extra dataset.train.num_images=400 \
        dataset.image_size=[64,64] dataset.crop_size=[64,64] data.batch_size=4

Each entry is a real `python -m segsuite.train` run (same data, seed, schedule and budget; the
entry's own overrides, e.g. FCN-8s' learning rate, are listed in the results);
the script collects val/mIoU_best and wall time, and writes
`outputs/convergence_<kind>/<timestamp>/results.{json,md}`.
Chance level on the default 6-class synthetic data is an mIoU of about 1/(2*6) ~ 0.08.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from segsuite import catalog

REPO = Path(__file__).resolve().parents[1]
SMALL_BACKBONE = "resnet18"
# Every architecture (`catalog.architectures()`) at a small backbone/width so the matrix fits a CPU
# budget; the architecture-defining design (heads, skips, unpooling, dilation) is unchanged: every
# model on a ResNet gets ResNet-18, and these entries their own settings. Every entry gets the same
# budget (images, size, batch, epochs, schedule, optimizer); FCN-8s alone takes a 10x lower learning
# rate: it is the one network without normalisation layers (VGG16 + fc6/fc7 as convs), and from
# scratch at AdamW 2e-3 it predicts background only for the first 100-200 steps.
OWN_SETTINGS = {
    "unet": ["model=unet_slim"],  # the quick start's slim U-Net (width 16, BatchNorm)
    "fcn8s": ["optimizer.lr=2e-4"],
}


def model_entries() -> dict[str, list[str]]:
    """Overrides of each architecture's run: `model=<name>`, ResNet-18 where it sits on a ResNet, its own settings."""
    unknown = sorted(set(OWN_SETTINGS) - set(catalog.architectures()))
    if unknown:
        raise KeyError(f"OWN_SETTINGS names {unknown}, which are not architectures: {catalog.architectures()}")
    entries = {}
    for name in catalog.architectures():
        overrides = [f"model={name}"]
        if catalog.takes_backbone(name, SMALL_BACKBONE):
            overrides.append(f"model.{catalog.backbone_key(name)}={SMALL_BACKBONE}")
        own = OWN_SETTINGS.get(name, [])
        overrides = [o for o in overrides if not any(o.split("=")[0] == p.split("=")[0] for p in own)]
        entries[name] = overrides + own
    return entries


COMMON = ["print_config=false", "trainer.enable_progress_bar=false", "test=false", "logger=csv"]


def run(name: str, overrides: list[str], out_root: Path) -> dict:
    run_dir = out_root / name
    cmd = [sys.executable, "-m", "segsuite.train", *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"},
                          check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed",
                "seconds": seconds}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"name": name, "val_mIoU_best": metrics["val/mIoU_best"], "val_mIoU_last": metrics["val/mIoU"],
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["losses", "models"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--only", default="", help="comma-separated subset")
    parser.add_argument("--extra", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--out", default=str(REPO / "outputs"))
    args = parser.parse_args()

    budget = [f"trainer.max_epochs={args.epochs}", *args.extra]
    if args.kind == "losses":
        entries = {name: [f"loss={name}"] for name in catalog.config_names("loss")}
    else:
        entries = model_entries()
    if args.only:
        entries = {k: v for k, v in entries.items() if k in args.only.split(",")}
    out_root = Path(args.out) / f"convergence_{args.kind}" / time.strftime("%Y-%m-%d_%H-%M-%S")
    results = []
    for name, overrides in entries.items():
        result = {**run(name, overrides + budget, out_root), "overrides": overrides}
        print(json.dumps(result), flush=True)
        results.append(result)

    label = {"losses": "loss", "models": "model"}[args.kind]
    lines = [f"| {label} | overrides | val mIoU (best) | val mIoU (last) | time (s) |", "|---|---|---|---|---|"]
    for r in results:
        own = " ".join(f"`{o}`" for o in entries[r["name"]])
        if "error" in r:
            lines.append(f"| {r['name']} | {own} | failed: {r['error']} | | {r['seconds']:.0f} |")
        else:
            lines.append(f"| {r['name']} | {own} | {r['val_mIoU_best']:.3f} | {r['val_mIoU_last']:.3f} "
                         f"| {r['seconds']:.0f} |")
    table = "\n".join(lines)
    (out_root / "results.json").write_text(json.dumps({"budget": budget, "results": results}, indent=2))
    (out_root / "results.md").write_text(f"Budget: `{' '.join(budget)}`\n\n{table}\n")
    print(table)
    print(f"written to {out_root}")


if __name__ == "__main__":
    main()
