"""Section `models`: parameters, FLOPs, training-step and inference images/s, memory, % of peak.

Every model runs at its paper's training crop (`paper_crop` on its class) or at the square CPU crop.
Models whose forward pass does little arithmetic per byte it writes (ENet's and the slim U-Net's
narrow convolutions) are memory-bound at any crop: their FLOP/s are reported but held to no
target. The verdict is measured, not listed: forward FLOPs per byte of the tensors the network's
layers output, below `MIN_INTENSITY`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from segsuite import catalog
from segsuite.benchmark.nets import build_model, model_inputs, total_loss
from segsuite.benchmark.peak import peak_matmul
from segsuite.benchmark.timing import autocast, best_time, count_flops, peak_memory
from segsuite.losses import CrossEntropyLoss

TARGETS = {"fp32": 0.75, "bf16": 0.50}  # training step's share of the peak, channels_last, eager
# FLOPs per byte written below which a network is memory-bound: ENet 8 and the slim U-Net 55, the
# ResNet, VGG and full-width U-Net networks 89-440 (128x128, fp32)
MIN_INTENSITY = 64.0


def crop_of(name: str, args) -> tuple[int, int]:
    """The crop model `name` runs at: its paper's (`--crop paper`) or `--crop-size` square."""
    if args.crop != "paper":
        return (args.crop_size, args.crop_size)
    crop = catalog.paper_crop(name)
    if crop is None:
        cls = catalog.config_class("model", name)
        raise ValueError(f"model {name}: {cls.__module__}.{cls.__qualname__} declares no `paper_crop`; "
                         "declare it on the class, or run with --crop cpu")
    return crop


def forward_intensity(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, float]:
    """(FLOPs, FLOPs per byte of the leaf modules' outputs) of one forward pass of `model(x)`."""
    written = [0]

    def count(_module, _inputs, out) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                written[0] += t.numel() * t.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    try:
        flops = count_flops(lambda: model(x))
    finally:
        for hook in hooks:
            hook.remove()
    return flops, flops / max(written[0], 1)


def bench_model(name: str, args, device: torch.device) -> dict[str, Any]:
    """Params, FLOPs, then train/infer images/s per (precision, channels_last, compile) variant."""
    torch.manual_seed(0)
    crop = crop_of(name, args)
    backbone = args.backbone if args.backbone and catalog.takes_backbone(name, args.backbone) else None
    model = build_model(name, args.num_classes, backbone).to(device)
    criterion = CrossEntropyLoss(ignore_index=255).to(device)
    x, y = model_inputs(args.batch, crop, args.num_classes, device)
    row: dict[str, Any] = {
        "model": name, "crop": list(crop), "batch": args.batch,
        "backbone": getattr(model, "backbone_name", None) or backbone or catalog.model_backbone(name),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    model.eval()
    with torch.no_grad():
        flops, row["flops_per_byte"] = forward_intensity(model, x[:1])
    row["gflops_infer"] = flops / 1e9
    row["memory_bound"] = row["flops_per_byte"] < MIN_INTENSITY
    model.train()
    row["gflops_train"] = count_flops(lambda: total_loss(criterion, model(x), y).backward()) / args.batch / 1e9
    model.zero_grad(set_to_none=True)
    # the peak again, right before this model's timings: on a shared machine load drifts, and the
    # fraction is only meaningful against a peak measured under the same conditions
    row["peak"] = peak = peak_matmul(device, args.peak_size, 3)
    row["variants"] = []
    variants = [(precision, fmt == "channels_last", compiled) for precision in args.precisions
                for fmt in args.memory_formats for compiled in ((False, True) if args.compile else (False,))]
    for precision, channels_last, compiled in variants:
        label = f"  {name:14s} {precision} cl={int(channels_last)} compile={int(compiled)}:"
        try:
            v = bench_variant(model, criterion, x, y, precision, channels_last, compiled, row, args, peak, device)
        except Exception as error:  # a compiler failure is a result: the other variants go on
            if not compiled:
                raise
            v = {"precision": precision, "channels_last": channels_last, "compile": True,
                 "error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"}
            model.zero_grad(set_to_none=True)
            print(f"{label} failed: {v['error']}", flush=True)
        else:
            print(f"{label} train {v['train_ips']:.2f} img/s ({v['train_peak']:.0%}), infer {v['infer_ips']:.2f} img/s",
                  flush=True)
        row["variants"].append(v)
    return row


def bench_variant(model, criterion, x, y, precision: str, channels_last: bool, compiled: bool, row: dict,
                  args, peak: dict[str, float], device: torch.device) -> dict[str, Any]:
    """One variant's training-step and inference images/s, peak memory and share of the peak."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    xin = x.contiguous(memory_format=fmt)
    if compiled:  # a fresh cache: a static-shape compile of this model, as a training run makes (not one
        torch.compiler.reset()  # made dynamic by the shapes of the models before it, which share forward's code)
    net = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4, fused=True)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = total_loss(criterion, net(xin), y)
        loss.backward()
        optimizer.step()

    def infer_step():
        with torch.inference_mode(), autocast(precision, device):
            out = net(xin)
        return out

    model.train()
    with peak_memory(device) as mem_train:
        train_s = best_time(train_step, args.warmup, args.iters, device)
    model.eval()
    with peak_memory(device) as mem_infer:
        infer_s = best_time(infer_step, args.warmup, args.iters, device)
    model.train()
    optimizer.state.clear()  # free the momentum buffers before the next variant
    model.zero_grad(set_to_none=True)
    train_ips, infer_ips = args.batch / train_s, args.batch / infer_s
    return {
        "precision": precision, "channels_last": channels_last, "compile": compiled,
        "train_ips": train_ips, "infer_ips": infer_ips,
        "train_gflops_s": train_ips * row["gflops_train"], "infer_gflops_s": infer_ips * row["gflops_infer"],
        "train_peak": train_ips * row["gflops_train"] / peak[precision],
        "infer_peak": infer_ips * row["gflops_infer"] / peak[precision],
        "train_mem_mib": mem_train["peak_mib"], "infer_mem_mib": mem_infer["peak_mib"],
        "mem_method": mem_train["method"],
    }


def measure(args, device: torch.device, on_row: Callable[[list[dict[str, Any]]], None] | None = None
            ) -> list[dict[str, Any]]:
    """Every `--models` entry in turn; `on_row(rows so far)` after each (the report is rewritten)."""
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows.append(bench_model(name, args, device))
        if on_row is not None:
            on_row(rows)
    return rows


def default_variant(row: dict, precision: str) -> dict | None:
    """The channels_last, uncompiled variant of `precision` (the shipped defaults)."""
    for v in row["variants"]:
        if v["precision"] == precision and v["channels_last"] and not v["compile"]:
            return v
    return None


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """A training step at the target share of the peak, per compute-bound model and precision."""
    rows = []
    for row in results.get("models", []):
        if row.get("memory_bound"):
            continue
        for precision, target in TARGETS.items():
            v = default_variant(row, precision)
            if v is not None:
                rows.append((f"{row['model']} train step {precision} (channels_last) >= {target:.0%} of peak",
                             f"{v['train_gflops_s']:.0f} GFLOP/s", f"{v['train_peak']:.0%}",
                             v["train_peak"] >= target))
    return rows


def render(results: dict[str, Any]) -> list[str]:
    """The models table."""
    if not results.get("models"):
        return []
    s = results["settings"]
    lines = [(f"Models: batch {s['batch']}, crop {s['crop_desc']}, {s['num_classes']} classes, fused-SGD step, "
              f"best of {s['iters']} after {s['warmup']} warm-up; % peak is against the peak GEMM measured again "
              "right before each model (load drifts on a shared machine). "
              "GFLOPs count multiply-adds as 2 FLOPs "
              "(torch.utils.flop_counter); train = forward + backward per image. Memory: "
              f"{results['models'][0]['variants'][0]['mem_method']}, MiB."), "",
             ("| model | backbone | crop | params (M) | GFLOPs/img fwd | GFLOPs/img train | precision "
              "| channels_last | compile | peak GFLOP/s | train img/s | train % peak | infer img/s "
              "| infer % peak | train mem | infer mem |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["models"]:
        for v in row["variants"]:
            measured = (f"{v['train_ips']:.2f} | {v['train_peak']:.0%} | {v['infer_ips']:.2f} "
                        f"| {v['infer_peak']:.0%} "
                        f"| {v['train_mem_mib']:.0f} | {v['infer_mem_mib']:.0f}") if "error" not in v else \
                f"failed: {v['error'].replace('|', '/')} | - | - | - | - | -"
            lines.append(
                f"| {row['model']} | {row['backbone'] or '-'} | {row['crop'][0]}×{row['crop'][1]} "
                f"| {row['params_m']:.1f} | {row['gflops_infer']:.1f} | {row['gflops_train']:.1f} "
                f"| {v['precision']} | {'yes' if v['channels_last'] else 'no'} "
                f"| {'yes' if v['compile'] else 'no'} | {row['peak'][v['precision']]:.0f} | {measured} |")
    lines.append("")
    return lines
