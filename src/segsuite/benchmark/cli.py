"""`python -m segsuite.benchmark`: options, the run over the chosen sections, the report after each."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import segsuite.benchmark as package
from segsuite import catalog
from segsuite.benchmark import data, loop, losses, machine, metrics, models, peak, slide
from segsuite.benchmark.report import write_report
from segsuite.utils.runtime import apply_runtime_settings

SECTIONS = ["peak", "models", "data", "losses", "metrics", "loop", "slide"]


def parser() -> argparse.ArgumentParser:
    """The options; the models, datasets and losses to choose from are the catalog's."""
    model_names = catalog.model_names()
    p = argparse.ArgumentParser(prog="python -m segsuite.benchmark", description=package.__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run: one small model, 1 iteration, small inputs")
    p.add_argument("--models", nargs="+", choices=model_names,
                   help=f"model configs (default: the {len(catalog.architectures())} architectures, variants left out)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    p.add_argument("--out", type=Path, default=Path("outputs") / "benchmark",
                   help="writes benchmark.json and benchmark.md here")
    p.add_argument("--crop", choices=["paper", "cpu"], default="paper",
                   help="paper: each paper's training crop (the targets' setting); cpu: square --crop-size for "
                        "every model, a quicker look")
    p.add_argument("--crop-size", type=int, default=128, help="side of the cpu crop")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--backbone", default=None,
                   help="backbone of the models on one of its family, e.g. resnet18 for the ResNet models "
                        "(model.backbone.name; default: each config's)")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants (slow warm-up on CPU)")
    p.add_argument("--memory-formats", nargs="+", choices=["contiguous", "channels_last"],
                   default=["contiguous", "channels_last"],
                   help="memory formats of the model variants (the targets read the channels_last ones)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed repetitions, the best counts (default: 2 at paper crops, 4 at the cpu crop)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repetitions first (default: 1 paper, 2 cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--cudnn-benchmark", choices=["on", "off"], default="off",
                   help="torch.backends.cudnn.benchmark (off: as the default trainer config; trainer=gpu sets it)")
    p.add_argument("--malloc-tuning", choices=["on", "off"], default="on",
                   help="glibc's heap keeps freed memory, as train.yaml's malloc_tuning (default: on, its default)")
    p.add_argument("--matmul-precision", choices=["highest", "high", "medium"], default="high",
                   help="torch.set_float32_matmul_precision, as train.yaml's float32_matmul_precision "
                        "(default: its default)")
    p.add_argument("--peak-size", type=int, default=2048)
    p.add_argument("--datasets", nargs="+", choices=data.datasets_with_trees(), default=None,
                   help="datasets (default: those whose class declares its official image size)")
    p.add_argument("--data-seconds", type=float, default=3.0, help="CPU-seconds per data measurement, over all rounds")
    p.add_argument("--data-rounds", type=int, default=5,
                   help="alternating rounds of decode / pipeline measurements; the best round of each counts")
    p.add_argument("--data-batch", type=int, default=2, help="images per collated batch in the pipeline measurement")
    p.add_argument("--losses", nargs="+", choices=catalog.config_names("loss"), default=None,
                   help="losses (default: every shipped one; ce is always measured, the reference)")
    p.add_argument("--loss-crop", type=int, nargs=2, default=[256, 512], help="H W of the loss/metric inputs")
    p.add_argument("--ref-model", choices=model_names, default="unet_slim",
                   help="model of the loss-step, metric and Lightning-loop measurements (the default run's model)")
    p.add_argument("--loop-crop", type=int, default=128)
    p.add_argument("--loop-batch", type=int, default=None,
                   help="batch of the Lightning run and its bare step (default: train.yaml's data.batch_size, 16)")
    p.add_argument("--loop-batches", type=int, default=40, help="timed Lightning batches")
    p.add_argument("--loop-skip", type=int, default=3, help="warm-up Lightning batches not timed (worker start-up)")
    p.add_argument("--loop-workers", default="auto",
                   help="dataloader workers of the Lightning run (default: auto, as data.num_workers)")
    p.add_argument("--slide-model", choices=model_names, default="enet")
    p.add_argument("--slide-image", type=int, nargs=2, default=[1024, 2048])
    p.add_argument("--slide-window", type=int, nargs=2, default=[512, 1024])
    p.add_argument("--window-batch", type=int, default=4)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options with the defaults that depend on others filled in (`--quick`, iterations, what to measure)."""
    p = parser()
    args = p.parse_args(argv)
    if args.data_rounds < 1 or args.data_seconds <= 0:
        p.error(f"--data-rounds must be >= 1 and --data-seconds > 0; got {args.data_rounds} and {args.data_seconds}")
    all_losses = args.losses is None
    args.losses = args.losses or losses.default_losses()
    if args.quick:
        args.models = args.models or ["enet"]
        args.crop, args.crop_size, args.iters, args.warmup, args.peak_size = "cpu", 64, 1, 1, 512
        args.datasets = args.datasets or ["camvid"]
        args.data_seconds, args.data_rounds, args.loss_crop, args.loop_crop = 0.05, 1, [64, 64], 64
        args.loop_batches, args.loop_skip, args.loop_workers, args.loop_batch = 2, 1, "0", args.loop_batch or 2
        args.slide_image, args.slide_window = [128, 256], [64, 128]
        if all_losses:  # cross-entropy and the losses whose training step is timed
            args.losses = ["ce", *[n for n in args.losses if n != "ce" and catalog.loss_needs_maps(n)]]
    # steps at paper crops take seconds and vary little; 128x128 ones take tens of ms and need more tries
    paper = args.crop == "paper"
    args.iters = args.iters if args.iters is not None else (2 if paper else 4)
    args.warmup = args.warmup if args.warmup is not None else (1 if paper else 2)
    args.models = args.models or catalog.architectures()
    names = args.datasets or data.default_datasets()
    # quick: the miniature trees' size, rewritten (no official size needed)
    args.datasets = data.cases(names, (48, 64) if args.quick else None) if "data" in args.sections else []
    if "ce" not in args.losses:
        args.losses = ["ce", *args.losses]
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections; write and return the results."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    # the entry points' own mechanism, so the harness runs with the settings a training run applies
    malloc_tuned = apply_runtime_settings({"torch_threads": args.threads,
                                           "float32_matmul_precision": args.matmul_precision,
                                           "malloc_tuning": args.malloc_tuning == "on"})
    crop_desc = ("each paper's training crop" if args.crop == "paper"
                 else f"{args.crop_size}×{args.crop_size} (CPU-sized)")
    results: dict[str, Any] = {"machine": machine.machine_info(device), "settings": {
        "quick": args.quick, "batch": args.batch, "crop": args.crop, "crop_desc": crop_desc,
        "num_classes": args.num_classes, "iters": args.iters, "warmup": args.warmup, "peak_size": args.peak_size,
        "compile": args.compile, "data_seconds": args.data_seconds, "data_rounds": args.data_rounds,
        "backbone": args.backbone, "matmul_precision": args.matmul_precision,
        "cudnn_benchmark": args.cudnn_benchmark, "malloc_tuning": malloc_tuned}}
    started = time.perf_counter()
    if "peak" in args.sections or "models" in args.sections:
        results["peak"] = peak.measure(args, device)

    def models_so_far(rows: list[dict[str, Any]]) -> None:
        results["models"] = rows
        write_report(results, args.out, started)

    sections: dict[str, Callable[[], Any]] = {
        "models": lambda: models.measure(args, device, on_row=models_so_far),
        "data": lambda: data.measure(args),
        "losses": lambda: losses.measure(args, device),
        "metrics": lambda: metrics.measure(args, device),
        "loop": lambda: loop.measure(args, device),
        "slide": lambda: slide.measure(args, device),
    }
    results["section_seconds"] = {}
    for name, measure in sections.items():
        if name in args.sections:
            print(name, flush=True)
            start = time.perf_counter()
            results[name] = measure()
            results["section_seconds"][name] = round(time.perf_counter() - start, 1)
            write_report(results, args.out, started)  # after every section: an interrupted run keeps what it measured
    write_report(results, args.out, started)
    print(f"wrote {args.out / 'benchmark.json'} and {args.out / 'benchmark.md'} ({results['seconds']:.0f} s)")
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv` (default: the command line), run, return the results."""
    return run(parse_args(argv))
