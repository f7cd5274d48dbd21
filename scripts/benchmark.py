#!/usr/bin/env python3
"""Benchmark harness: how close training and inference come to this machine's limit.

    python scripts/benchmark.py                      # full run, each model at its paper's crop (2-core CPU: ~14 min)
    python scripts/benchmark.py --crop cpu           # every model at 128x128 (2-core CPU: ~4 min)
    python scripts/benchmark.py --quick              # tiny smoke run (seconds)
    python scripts/benchmark.py --models pspnet unet --compile
    # compiled vs eager, the default format:
    python scripts/benchmark.py --sections models --compile --memory-formats channels_last
    make bench ARGS="--quick"

Sections (`--sections`, default all):
  peak     measured peak GEMM FLOP/s (2048^3, fp32 and bf16; the faster of `a @ b` and the same
           product as a 1x1 convolution), the denominator of every "% of peak"
  models   per architecture: parameters, GFLOPs/image (torch.utils.flop_counter), training-step and
           inference images/s in fp32 / bf16-mixed, with and without channels_last (and torch.compile
           with --compile), peak memory, achieved FLOP/s as a fraction of the measured peak
  data     per dataset pipeline, one worker: decode+augment+normalise+collate vs decode alone, on
           miniature official trees rewritten at the official image size (built in a temp dir)
  losses   every loss's forward+backward time relative to cross-entropy (distance maps precomputed
           as the workers do), and the training step of the distance-map losses relative to CE
  metrics  metric update time relative to a validation step (and the confusion-matrix kernel)
  loop     the full Lightning training loop (data, loss, metrics, logging calls) vs the bare step
  slide    sliding-window inference vs the same number of whole-window forwards

Timings are the best of `--iters` repetitions after `--warmup` (the least disturbed run on a shared
machine). Peak memory: CUDA `max_memory_allocated`; on CPU the peak resident set size (VmHWM)
above the resident size at the start of the measurement, after resetting the peak through
`/proc/self/clear_refs` (falls back to the `getrusage` maxrss delta where that is not writable).
Writes `<out>/benchmark.json` and `<out>/benchmark.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without install

from segsuite.catalog import model_config
from segsuite.losses import CrossEntropyLoss
from segsuite.metrics import SegmentationMetrics, confusion_matrix, scores_to_labels
from segsuite.utils.runtime import apply_runtime_settings

ARCHITECTURES = ["deeplabv3plus", "pspnet", "upernet", "gcn", "duc_hdc", "fcn8s", "segnet", "enet", "unet"]
# Also accepted by --models / --ref-model / --slide-model: the default run's slim U-Net.
MODEL_CHOICES = [*ARCHITECTURES, "unet_slim"]
LOW_INTENSITY = {"enet", "unet", "unet_slim"}  # excluded from the FLOP/s targets (tiny convs, memory-bound)
RESNET_MODELS = {"deeplabv3plus", "pspnet", "upernet", "gcn", "duc_hdc"}
# The papers' training crops (H, W) and the dataset each was trained on.
PAPER_CROPS = {
    "deeplabv3plus": ((512, 1024), "Cityscapes"), "pspnet": ((713, 713), "Cityscapes"),
    "upernet": ((512, 512), "ADE20K"), "gcn": ((512, 512), "VOC"), "duc_hdc": ((544, 544), "Cityscapes"),
    "fcn8s": ((500, 500), "VOC"), "segnet": ((360, 480), "CamVid"), "enet": ((512, 1024), "Cityscapes"),
    "unet": ((572, 572), "ISBI"), "unet_slim": ((572, 572), "ISBI"),
}
DATASETS = [  # (dataset config, extra overrides, official image size H x W)
    ("camvid", [], (360, 480)), ("voc_aug", [], (375, 500)), ("cityscapes", [], (1024, 2048)),
    ("ade20k", [], (512, 683)), ("cocostuff164k", [], (480, 640)), ("cocostuff10k", [], (480, 640)),
]
LOSSES = ["ce", "focal", "dpce", "dice", "gdice", "ce_dice", "iou", "tversky", "focal_tversky", "lovasz",
          "boundary", "hausdorff", "combo", "ell"]
DISTANCE_LOSSES = ["dpce", "boundary", "hausdorff"]
SECTIONS = ["peak", "models", "data", "losses", "metrics", "loop", "slide"]
TARGETS = {"fp32_peak": 0.75, "bf16_peak": 0.50, "loop": 0.90, "distance_loss": 1.25, "metric": 0.02,
           "slide": 1.20, "data": 0.60}


# -- measurement primitives ---------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], warmup: int, iters: int, device: torch.device) -> float:
    """Seconds of the fastest of `iters` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = math.inf
    for _ in range(max(iters, 1)):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def autocast(precision: str, device: torch.device):
    """`torch.autocast` for "bf16" (mixed), a no-op context for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`), so the RSS baseline is what is in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yields a dict that holds `peak_mib` and `method` after the block."""
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        result.update(peak_mib=(torch.cuda.max_memory_allocated(device) - base) / 2**20,
                      method="cuda max_memory_allocated")
        return
    release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _proc_status_kib("VmRSS")
        yield result
        result.update(peak_mib=(_proc_status_kib("VmHWM") - base) / 1024, method="VmHWM - VmRSS (clear_refs)")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield result
        result.update(peak_mib=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                      method="getrusage maxrss delta (lower bound)")


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device.type}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "?").strip()
        info["cpus"] = int(fields.get("CPU(s)", "0").strip() or 0)
        flags = fields.get("Flags", "")
        info["cpu_bf16"] = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor() or "?"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_avg_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


# -- peak ---------------------------------------------------------------------------------------------
def conv1x1_operands(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, weight) of a 1x1 convolution that computes `a @ b` ([M, K] x [K, N]): N pixels,
    K -> M channels; the input in channels_last, the shipped memory format.

    The same 2*M*K*N FLOPs as `a @ b`, but through the convolution library (oneDNN on CPUs,
    cuDNN on GPUs) instead of BLAS."""
    m, k = a.shape
    return b.reshape(1, k, b.shape[1], 1).contiguous(memory_format=torch.channels_last), a.reshape(m, k, 1, 1)


def peak_matmul(device: torch.device, size: int, iters: int) -> dict[str, Any]:
    """Peak GFLOP/s of a `size`^3 matrix product (2 size^3 FLOPs) in fp32 and bf16.

    Timed through both GEMM paths a model's layers take: `a @ b` (BLAS: MKL on x86 CPUs, cuBLAS
    on GPUs) and the same product as a 1x1 convolution (`conv1x1_operands`). The peak is the
    faster of the two; both are kept under "paths". They can differ by 2x: on the AMD
    development CPU MKL's fp32 GEMM (no AVX-512 code path there) reaches half of what oneDNN's
    convolutions do, so a peak from `a @ b` alone put convolution-heavy models above 100%.
    """
    paths: dict[str, dict[str, float]] = {"matmul": {}, "conv1x1": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        x, w = conv1x1_operands(a, b)  # laid out once, outside the timing
        for path, run in (("matmul", lambda a=a, b=b: a @ b),
                          ("conv1x1", lambda x=x, w=w: torch.nn.functional.conv2d(x, w))):
            paths[path][name] = 2 * size**3 / best_time(run, 1, iters, device) / 1e9
    return {name: max(p[name] for p in paths.values()) for name in ("fp32", "bf16")} | {"paths": paths}


# -- models -------------------------------------------------------------------------------------------
def build_model(name: str, num_classes: int, backbone: str | None) -> torch.nn.Module:
    cfg = OmegaConf.create({"dataset": {"num_classes": num_classes}, "model": model_config(name, CONF)})
    if backbone and "backbone" in cfg.model:
        cfg.model.backbone = backbone
    return instantiate(cfg.model)


def total_loss(criterion: torch.nn.Module, out, target: torch.Tensor, aux_weight: float = 0.4,
               **extras) -> torch.Tensor:
    """Main loss plus `aux_weight` x each auxiliary head's loss (as `SegmentationModule` does)."""
    logits, aux = out if isinstance(out, (tuple, list)) else (out, [])
    loss = criterion(logits, target, **extras)
    for a in aux:
        loss = loss + aux_weight * criterion(a, target, **extras)
    return loss


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def model_inputs(batch: int, crop: tuple[int, int], num_classes: int, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *crop, generator=generator).to(device)
    y = torch.randint(0, num_classes, (batch, *crop), generator=generator).to(device)
    return x, y


def bench_model(name: str, args, peak: dict[str, float], device: torch.device) -> dict[str, Any]:
    """Params, FLOPs, then train/infer images/s per (precision, channels_last, compile) variant."""
    torch.manual_seed(0)
    crop = PAPER_CROPS[name][0] if args.crop == "paper" else (args.crop_size, args.crop_size)
    model = build_model(name, args.num_classes, args.backbone if name in RESNET_MODELS else None).to(device)
    criterion = CrossEntropyLoss(ignore_index=255).to(device)
    x, y = model_inputs(args.batch, crop, args.num_classes, device)
    row: dict[str, Any] = {
        "model": name, "crop": list(crop), "batch": args.batch,
        "backbone": (getattr(model, "backbone_name", None)
                     or (args.backbone or model_config(name, CONF).get("backbone"))),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    model.eval()
    with torch.no_grad():
        row["gflops_infer"] = count_flops(lambda: model(x[:1])) / 1e9
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


# -- data pipelines -----------------------------------------------------------------------------------
def rate_per_image(fn: Callable[[int], Any], count: int, min_seconds: float, images_per_call: int = 1) -> float:
    """Images per CPU-second of this (single-threaded) process calling `fn(i)` round-robin for at
    least `min_seconds` of CPU time, after one warm-up call. CPU time, not wall time: it is what one
    worker spends per image, and it barely moves when other jobs share the cores."""
    fn(0)
    start, n = time.process_time(), 0
    while n < 2 * count or time.process_time() - start < min_seconds:
        fn(n % count)
        n += 1
    return n * images_per_call / (time.process_time() - start)


def best_interleaved_rates(fns: dict[str, tuple[Callable[[int], Any], int]], count: int, seconds: float,
                           rounds: int) -> dict[str, float]:
    """`rate_per_image` of every `(fn, images_per_call)`, taken in `rounds` alternating rounds of
    `seconds / rounds` each; the best round of each. Ratios between them then compare runs made
    under the same conditions, not a quiet minute against a busy one."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, (fn, images_per_call) in fns.items():
            best[name] = max(best[name], rate_per_image(fn, count, seconds / rounds, images_per_call))
    return best


def bench_dataset(name: str, overrides: list[str], size: tuple[int, int], workdir: Path, args) -> dict[str, Any]:
    """One worker: decode alone vs decode + train augmentation + to-tensor + collate, as shipped.

    Shipped (`data.normalize_on_device=true`): workers ship uint8 images and masks, and the
    normalisation runs on the device after the transfer; its cost per image there is timed on its
    own. Beside it, the pipeline that normalises in the worker (`normalize_on_device=false`).
    """
    from segsuite.data.datamodule import collate
    from segsuite.data.transforms import build_pipeline, split_off_normalize
    from segsuite.testing import dataset_trees as trees
    from segsuite.testing.dataset_trees import compose, rewrite_at_size

    trees.BUILDERS[name](workdir)
    cfg = compose(name, workdir, overrides)
    raw = instantiate(cfg.dataset.train, transform=None)
    rewrite_at_size(raw, name, size)
    in_worker = instantiate(cfg.dataset.train, transform=build_pipeline(cfg.augmentation.train))
    stripped, normalize = split_off_normalize(cfg.augmentation.train)
    shipped = instantiate(cfg.dataset.train, transform=build_pipeline(stripped), uint8_output=normalize is not None)
    count = len(raw)
    batch = args.data_batch

    def loader(dataset) -> Callable[[int], dict[str, Any]]:
        return lambda i: collate([dataset[((i + k) % count, i * batch + k)] for k in range(batch)])

    rates = best_interleaved_rates(
        {"decode": (lambda i: raw[i], 1), "pipeline": (loader(shipped), batch),
         "worker_norm": (loader(in_worker), batch)},
        count, args.data_seconds, args.data_rounds)
    decode, pipeline, pipeline_worker_norm = rates["decode"], rates["pipeline"], rates["worker_norm"]
    images = loader(shipped)(0)["image"]
    normalize_s = best_time(lambda: normalize(images), 1, 5, torch.device("cpu")) / batch if normalize else 0.0
    return {"dataset": name, "image": list(size), "crop": list(cfg.dataset.crop_size), "decode_ips": decode,
            "pipeline_ips": pipeline, "ratio": pipeline / decode, "pipeline_worker_norm_ips": pipeline_worker_norm,
            "ratio_worker_norm": pipeline_worker_norm / decode, "device_normalize_ms": normalize_s * 1e3}


def bench_data(args) -> list[dict[str, Any]]:
    import cv2

    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # a dataloader worker: torch uses one thread there;
    cv2.setNumThreads(1)      # OpenCV is pinned to one too for a per-worker figure
    rows = []
    try:
        for name, overrides, size in args.datasets:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(bench_dataset(name, overrides, size, Path(tmp), args))
            r = rows[-1]
            print(f"  {name:14s} decode {r['decode_ips']:.1f} img/s, pipeline {r['pipeline_ips']:.1f} img/s "
                  f"({r['ratio']:.0%})", flush=True)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    return rows


# -- losses -------------------------------------------------------------------------------------------
def build_loss(name: str) -> torch.nn.Module:
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": OmegaConf.load(CONF / "loss" / f"{name}.yaml")})
    return instantiate(cfg.loss)


def synthetic_masks(batch: int, crop: tuple[int, int], num_classes: int) -> torch.Tensor:
    """Region-shaped masks (SyntheticShapes scenes) with a strip of ignored pixels."""
    from segsuite.data.datasets import SyntheticShapes

    data = SyntheticShapes(num_images=batch, image_size=crop, num_classes=num_classes, objects_per_image=(6, 10))
    masks = np.stack([data[i]["mask"] for i in range(batch)])
    masks[:, : max(1, crop[0] // 16)] = 255
    return torch.from_numpy(masks)


def loss_extras(loss: torch.nn.Module, masks: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
    """Worker-side maps for a batch (stacked like the collate does) and the ms per sample they took."""
    if not hasattr(loss, "target_fn"):
        return {}, 0.0
    start = time.perf_counter()
    items = [loss.target_fn(m) for m in masks.numpy()]
    per_sample_ms = (time.perf_counter() - start) / len(items) * 1e3
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}, per_sample_ms


def bench_losses(args, device: torch.device) -> dict[str, Any]:
    crop = (args.loss_crop[0], args.loss_crop[1])
    target = synthetic_masks(args.batch, crop, args.num_classes).to(device)
    logits0 = torch.randn(args.batch, args.num_classes, *crop, device=device)
    losses, extras, worker_ms = {}, {}, {}
    for name in args.losses:
        losses[name] = build_loss(name).to(device)
        extras[name], worker_ms[name] = loss_extras(losses[name], target.cpu())
        extras[name] = {k: v.to(device) for k, v in extras[name].items()}

    def loss_only(name: str) -> Callable[[], None]:
        def run():
            logits = logits0.clone().requires_grad_(True)
            losses[name](logits, target, **extras[name]).backward()
        return run

    loss_s = {name: best_time(loss_only(name), args.warmup, args.iters, device) for name in args.losses}
    torch.manual_seed(0)
    model = build_model(args.ref_model, args.num_classes, None).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, *crop, device=device).contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, fused=True)

    def step(name: str) -> Callable[[], None]:
        def run():
            optimizer.zero_grad(set_to_none=True)
            total_loss(losses[name], model(x), target, **extras[name]).backward()
            optimizer.step()
        return run

    step_names = [n for n in ["ce", *DISTANCE_LOSSES] if n in args.losses]
    step_s = {name: math.inf for name in step_names}
    for name in step_names:
        step(name)()  # warm-up
    for _ in range(max(args.iters, 1)):  # interleaved rounds: load changes hit every loss alike
        for name in step_names:
            step_s[name] = min(step_s[name], best_time(step(name), 0, 1, device))
    rows = [{"loss": n, "loss_ms": loss_s[n] * 1e3, "loss_ratio": loss_s[n] / loss_s["ce"],
             "step_ms": step_s[n] * 1e3 if n in step_s else None,
             "step_ratio": step_s[n] / step_s["ce"] if n in step_s else None,
             "worker_ms_per_sample": worker_ms[n]} for n in args.losses]
    for r in rows:
        print(f"  {r['loss']:14s} loss fwd+bwd {r['loss_ms']:.1f} ms ({r['loss_ratio']:.2f}x CE)"
              + (f", step {r['step_ms']:.0f} ms ({r['step_ratio']:.2f}x CE)" if r["step_ms"] else ""), flush=True)
    return {"crop": list(crop), "batch": args.batch, "num_classes": args.num_classes, "step_model": args.ref_model,
            "rows": rows}


# -- metrics ------------------------------------------------------------------------------------------
def confusion_matrix_reference(preds: torch.Tensor, target: torch.Tensor, num_classes: int,
                               ignore_index: int) -> torch.Tensor:
    """The boolean-indexing formulation (compacts valid pixels, then bincount), for comparison."""
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[valid] * num_classes + preds[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def bench_metrics(args, device: torch.device) -> dict[str, Any]:
    """Metric update vs a validation step, both as `SegmentationModule._eval_step` runs them.

    The validation step is forward + loss + prediction (`scores_to_labels`, the argmax) + metric
    update; the prediction is computed once per batch and shared with evaluate's callbacks, so the
    metric update is the confusion-matrix accumulation from labels. The argmax, and an update that
    takes the scores (argmax inside), are reported beside it.
    """
    crop = (args.loss_crop[0], args.loss_crop[1])
    torch.manual_seed(0)
    model = build_model(args.ref_model, args.num_classes, None).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, *crop, device=device).contiguous(memory_format=torch.channels_last)
    target = synthetic_masks(args.batch, crop, args.num_classes).to(device)
    criterion = CrossEntropyLoss(ignore_index=255).to(device)
    metric = SegmentationMetrics(args.num_classes).to(device)
    with torch.inference_mode():
        logits = model(x).float()
    preds = scores_to_labels(logits)

    def val_step():
        with torch.inference_mode():
            out = model(x).float()
            criterion(out, target)
            metric.update(scores_to_labels(out), target)

    def update():
        with torch.inference_mode():
            metric.update(preds, target)

    def update_from_scores():
        with torch.inference_mode():
            metric.update(logits, target)

    reps = max(args.iters, 5)
    val_s = best_time(val_step, args.warmup, args.iters, device)
    update_s = best_time(update, args.warmup, reps, device)
    update_scores_s = best_time(update_from_scores, args.warmup, reps, device)
    argmax_s = best_time(lambda: scores_to_labels(logits), args.warmup, reps, device)
    cm_s = best_time(lambda: confusion_matrix(preds, target, args.num_classes, 255), args.warmup, reps, device)
    cm_ref_s = best_time(lambda: confusion_matrix_reference(preds, target, args.num_classes, 255), args.warmup,
                         reps, device)
    out = {"model": args.ref_model, "crop": list(crop), "batch": args.batch, "val_step_ms": val_s * 1e3,
           "update_ms": update_s * 1e3, "update_from_scores_ms": update_scores_s * 1e3, "argmax_ms": argmax_s * 1e3,
           "confusion_ms": cm_s * 1e3, "confusion_boolean_index_ms": cm_ref_s * 1e3, "ratio": update_s / val_s,
           "ratio_from_scores": update_scores_s / val_s}
    print(f"  metric update {out['update_ms']:.2f} ms = {out['ratio']:.2%} of a validation step "
          f"({out['val_step_ms']:.1f} ms); from scores (argmax inside) {out['update_from_scores_ms']:.2f} ms = "
          f"{out['ratio_from_scores']:.2%}; confusion {out['confusion_ms']:.2f} ms "
          f"(boolean-index form {out['confusion_boolean_index_ms']:.2f} ms)", flush=True)
    return out


# -- Lightning loop -----------------------------------------------------------------------------------
def compose_train(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from segsuite.utils.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def bench_loop(args, device: torch.device) -> dict[str, Any]:
    """Images/s of `trainer.fit` (batches after the warm-up ones) vs the bare step on one batch."""
    with tempfile.TemporaryDirectory() as tmp:
        return _bench_loop(args, device, Path(tmp))


def _bench_loop(args, device: torch.device, workdir: Path) -> dict[str, Any]:
    import pytorch_lightning as pl

    from segsuite.optim import build_optimizer
    from segsuite.train import build_components

    crop = args.loop_crop
    steps = args.loop_batches
    overrides = [
        f"model={args.ref_model}", "dataset=synthetic", f"dataset.image_size=[{crop},{crop}]",
        f"dataset.crop_size=[{crop},{crop}]", f"dataset.num_classes={min(args.num_classes, 31)}",
        *([f"data.batch_size={args.loop_batch}"] if args.loop_batch else []),
        f"data.num_workers={args.loop_workers}", "loss=ce",
        f"paths.output_dir={workdir}", f"paths.log_dir={workdir}",
        "~callbacks", "~logger",
    ]
    if device.type == "cpu":
        overrides.append("trainer=cpu")
    cfg = compose_train(overrides)
    batch_size = int(cfg.data.batch_size)
    pl.seed_everything(0, workers=True)
    datamodule, module = build_components(cfg)

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync(device)
            self.stamps.append(time.perf_counter())

    clock = StepClock()
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, max_epochs=1,
        limit_train_batches=steps + args.loop_skip, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
        default_root_dir=str(workdir),
    )
    # the bare step: same net, loss, optimizer, precision, memory format and batch; timed before and
    # after the Lightning run (medians of both), so a change of machine load hits both sides alike
    net = module.net.to(device)
    datamodule.setup("fit")
    batch = datamodule.to_model_input(next(iter(datamodule.train_dataloader())))
    x = batch["image"].to(device)
    if module.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch["mask"].to(device)
    optimizer = build_optimizer(module.optimizer_factory, net, module.lr, module.weight_decay, module.backbone_lr_mult)
    precision = "bf16" if str(cfg.trainer.precision).startswith("bf16") else "fp32"
    net.train()

    def bare_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = total_loss(module.criterion, net(x), y)
        loss.backward()
        optimizer.step()

    def bare_times(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            bare_step()
            sync(device)
            times.append(time.perf_counter() - start)
        return times

    half = max(steps // 2, 1)
    warm = max(args.loop_skip, 10)  # oneDNN primitives and the allocator settle over the first steps
    bare = bare_times(warm + half)[warm:]
    trainer.fit(module, datamodule=datamodule)
    net.to(device)  # Lightning moves the module back to the CPU when fit ends
    bare += bare_times(half)
    gaps = np.diff(clock.stamps[args.loop_skip - 1:])
    loop_ips = batch_size / float(np.median(gaps))
    loop_best_ips = batch_size / float(gaps.min())
    bare_ips = batch_size / float(np.median(bare))
    out = {"model": args.ref_model, "crop": [crop, crop], "batch": batch_size, "precision": str(cfg.trainer.precision),
           "channels_last": bool(module.channels_last), "num_workers": datamodule.num_workers,
           "batches_timed": len(gaps), "loop_ips": loop_ips, "loop_best_ips": loop_best_ips, "bare_ips": bare_ips,
           "bare_best_ips": batch_size / min(bare), "ratio": loop_ips / bare_ips,
           "ratio_best": loop_best_ips / (batch_size / min(bare))}
    print(f"  Lightning loop {loop_ips:.2f} img/s (median batch; best {loop_best_ips:.2f}) vs bare step "
          f"{bare_ips:.2f} img/s median: {out['ratio']:.0%}", flush=True)
    return out


# -- sliding window -----------------------------------------------------------------------------------
def bench_slide(args, device: torch.device) -> dict[str, Any]:
    """`Inferencer(mode="slide")` vs forwarding the same windows, batched the same way, on their own."""
    from segsuite.inference import Inferencer, window_starts

    (img_h, img_w), (win_h, win_w) = args.slide_image, args.slide_window
    torch.manual_seed(0)
    model = (build_model(args.slide_model, args.num_classes, None).to(device).eval()
             .to(memory_format=torch.channels_last))
    image = torch.randn(1, 3, img_h, img_w, device=device)
    inferencer = Inferencer(mode="slide", crop_size=(win_h, win_w), window_batch=args.window_batch)
    boxes = [(y, x) for y in window_starts(img_h, win_h, inferencer.stride[0])
             for x in window_starts(img_w, win_w, inferencer.stride[1])]
    chunks = [boxes[i:i + args.window_batch] for i in range(0, len(boxes), args.window_batch)]
    crops = [torch.randn(len(c), 3, win_h, win_w, device=device) for c in chunks]

    def net(t: torch.Tensor) -> torch.Tensor:
        return model(t.contiguous(memory_format=torch.channels_last))

    def slide():
        with torch.inference_mode():
            inferencer(net, image)

    def whole():
        with torch.inference_mode():
            for c in crops:
                net(c).float()

    slide_s = whole_s = math.inf
    slide()  # warm-up
    whole()
    for _ in range(max(min(args.iters, 3), 1)):  # interleaved rounds: load changes hit both alike
        slide_s = min(slide_s, best_time(slide, 0, 1, device))
        whole_s = min(whole_s, best_time(whole, 0, 1, device))
    out = {"model": args.slide_model, "image": [img_h, img_w], "window": [win_h, win_w],
           "stride": list(inferencer.stride), "windows": len(boxes), "window_batch": args.window_batch,
           "slide_ms": slide_s * 1e3, "whole_windows_ms": whole_s * 1e3, "ratio": slide_s / whole_s}
    print(f"  slide {out['slide_ms']:.0f} ms vs {len(boxes)} whole-window forwards {out['whole_windows_ms']:.0f} ms: "
          f"{out['ratio']:.2f}x", flush=True)
    return out


# -- report -------------------------------------------------------------------------------------------
def default_variant(row: dict, precision: str) -> dict | None:
    """The channels_last, uncompiled variant of `precision` (the shipped defaults)."""
    for v in row["variants"]:
        if v["precision"] == precision and v["channels_last"] and not v["compile"]:
            return v
    return None


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, ratio text, met) for every target the run measured."""
    rows = []
    for row in results.get("models", []):
        if row["model"] in LOW_INTENSITY:
            continue
        for precision, key in (("fp32", "fp32_peak"), ("bf16", "bf16_peak")):
            v = default_variant(row, precision)
            if v is not None:
                rows.append((f"{row['model']} train step {precision} (channels_last) >= {TARGETS[key]:.0%} of peak",
                             f"{v['train_gflops_s']:.0f} GFLOP/s", f"{v['train_peak']:.0%}",
                             v["train_peak"] >= TARGETS[key]))
    if "loop" in results:
        r = results["loop"]
        rows.append((f"Lightning loop >= {TARGETS['loop']:.0%} of bare step",
                     f"{r['loop_ips']:.2f} vs {r['bare_ips']:.2f} img/s",
                     f"{r['ratio']:.0%}", r["ratio"] >= TARGETS["loop"]))
    for r in results.get("losses", {}).get("rows", []):
        if r["loss"] in DISTANCE_LOSSES and r["step_ratio"] is not None:
            rows.append((f"{r['loss']} step <= {TARGETS['distance_loss']}x CE step", f"{r['step_ms']:.0f} ms",
                         f"{r['step_ratio']:.2f}x", r["step_ratio"] <= TARGETS["distance_loss"]))
    if "metrics" in results:
        r = results["metrics"]
        rows.append((f"metric update <= {TARGETS['metric']:.0%} of a validation step", f"{r['update_ms']:.2f} ms",
                     f"{r['ratio']:.2%}", r["ratio"] <= TARGETS["metric"]))
    if "slide" in results:
        r = results["slide"]
        rows.append((f"slide within {TARGETS['slide']}x of whole-window forwards", f"{r['slide_ms']:.0f} ms",
                     f"{r['ratio']:.2f}x", r["ratio"] <= TARGETS["slide"]))
    for r in results.get("data", []):
        rows.append((f"{r['dataset']} pipeline >= {TARGETS['data']:.0%} of decode (per worker)",
                     f"{r['pipeline_ips']:.1f} vs {r['decode_ips']:.1f} img/s", f"{r['ratio']:.0%}",
                     r["ratio"] >= TARGETS["data"]))
    return rows


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs"
             + (f", GPU {m['gpu']}" if "gpu" in m else "")
             + f"; torch {m['torch']}, {m['threads']} threads; load average at start {m.get('load_avg_start')}"
             + (f", at end {m.get('load_avg_end')}" if "load_avg_end" in m else "") + ".", ""]
    if "peak" in results:
        p = results["peak"]
        paths = p.get("paths", {})
        by_path = "; ".join(f"{prec}: `a @ b` {paths['matmul'][prec]:.0f}, "
                            f"1×1 convolution {paths['conv1x1'][prec]:.0f}"
                            for prec in ("fp32", "bf16")) if paths else ""
        lines += [(f"Measured peak GEMM ({results['settings']['peak_size']}³, the faster of `a @ b` "
                   f"and the same product as a 1×1 convolution): "
                   f"**{p['fp32']:.0f} GFLOP/s fp32**, **{p['bf16']:.0f} GFLOP/s bf16**"
                   + (f" ({by_path})." if by_path else ".")), ""]
    targets = target_rows(results)
    if targets:
        lines += ["| target | measured | ratio | met |", "|---|---|---|---|"]
        lines += [f"| {t} | {m_} | {r} | {'yes' if ok else '**no**'} |" for t, m_, r, ok in targets]
        lines.append("")
    if results.get("models"):
        s = results["settings"]
        lines += [(f"Models: batch {s['batch']}, crop {s['crop_desc']}, {s['num_classes']} classes, fused-SGD step, "
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
    if results.get("data"):
        lines += [("Data pipelines, one worker (1 torch / 1 OpenCV thread), train split, images per CPU-second "
                  f"(best of {results['settings']['data_rounds']} alternating rounds of the three measurements). "
                  "Shipped: decode + augment + uint8 tensors + collate, normalised on the device after the transfer "
                  "(its cost per image there in the next column, here on the CPU). Last two columns: the worker "
                  "normalises and ships float32 (`data.normalize_on_device=false`)."), "",
                  ("| dataset | image H×W | crop H×W | decode only | shipped pipeline | ratio "
                  "| device normalise ms/img | worker-normalised pipeline | ratio |"),
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['image'][0]}×{r['image'][1]} | {r['crop'][0]}×{r['crop'][1]} "
                  f"| {r['decode_ips']:.1f} "
                  f"| {r['pipeline_ips']:.1f} | {r['ratio']:.0%} | {r['device_normalize_ms']:.2f} "
                  f"| {r['pipeline_worker_norm_ips']:.1f} | {r['ratio_worker_norm']:.0%} |"
                  for r in results["data"]]
        lines.append("")
    if results.get("losses"):
        lo = results["losses"]
        lines += [(f"Losses: logits [{lo['batch']},{lo['num_classes']},{lo['crop'][0]},{lo['crop'][1]}]; "
                  "maps precomputed (worker cost per sample shown); "
                  f"step = {lo['step_model']} forward + loss + backward + fused SGD."), "",
                  "| loss | fwd+bwd ms | × CE | training step ms | × CE step | worker target_fn ms/sample |",
                  "|---|---|---|---|---|---|"]
        for r in lo["rows"]:
            step = f"{r['step_ms']:.0f} | {r['step_ratio']:.2f}" if r["step_ms"] is not None else "- | -"
            lines.append(f"| {r['loss']} | {r['loss_ms']:.1f} | {r['loss_ratio']:.2f} | {step} "
                         f"| {r['worker_ms_per_sample']:.1f} |")
        lines.append("")
    if "metrics" in results:
        r = results["metrics"]
        lines += [(f"Metrics ({r['model']}, batch {r['batch']}, {r['crop'][0]}×{r['crop'][1]}): validation step "
                  f"(forward + loss + argmax + update) {r['val_step_ms']:.1f} ms; metric update from the step's "
                  f"labels {r['update_ms']:.2f} ms ({r['ratio']:.2%}; confusion matrix {r['confusion_ms']:.2f} ms, "
                  f"boolean-index form {r['confusion_boolean_index_ms']:.2f} ms). The prediction (argmax) "
                  f"{r['argmax_ms']:.2f} ms; an update given the scores, argmax inside, "
                  f"{r['update_from_scores_ms']:.2f} ms ({r['ratio_from_scores']:.2%})."), ""]
    if "loop" in results:
        r = results["loop"]
        lines += [(f"Lightning loop ({r['model']}, batch {r['batch']}, {r['crop'][0]}×{r['crop'][1]}, "
                  f"{r['precision']}, channels_last={r['channels_last']}, {r['num_workers']} workers, "
                  f"{r['batches_timed']} batches): "
                  f"{r['loop_ips']:.2f} img/s median (best batch {r['loop_best_ips']:.2f}) vs bare step "
                  f"{r['bare_ips']:.2f} img/s median (best {r['bare_best_ips']:.2f}) = {r['ratio']:.0%} "
                  f"({r['ratio_best']:.0%} best against best)."), ""]
    if "slide" in results:
        r = results["slide"]
        lines += [(f"Sliding window ({r['model']}): {r['image'][0]}×{r['image'][1]} image, "
                  f"{r['window'][0]}×{r['window'][1]} windows, stride {r['stride'][0]}×{r['stride'][1]} "
                  f"({r['windows']} windows, {r['window_batch']} per pass): "
                  f"{r['slide_ms']:.0f} ms vs {r['whole_windows_ms']:.0f} ms for the same windows forwarded alone = "
                  f"{r['ratio']:.2f}x."), ""]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run: one small model, 1 iteration, small inputs")
    p.add_argument("--models", nargs="+", choices=MODEL_CHOICES,
                   help=f"architectures (default: all {len(ARCHITECTURES)})")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmark",
                   help="writes benchmark.json and benchmark.md here")
    p.add_argument("--crop", choices=["paper", "cpu"], default="paper",
                   help="paper: each paper's training crop (the targets' setting); cpu: square --crop-size for "
                        "every model, a quicker look")
    p.add_argument("--crop-size", type=int, default=128, help="side of the cpu crop")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--backbone", default=None, help="ResNet depth for ResNet models (default: each config's)")
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
    p.add_argument("--datasets", nargs="+", choices=[d[0] for d in DATASETS], default=None)
    p.add_argument("--data-seconds", type=float, default=3.0, help="CPU-seconds per data measurement, over all rounds")
    p.add_argument("--data-rounds", type=int, default=5,
                   help="alternating rounds of decode / pipeline measurements; the best round of each counts")
    p.add_argument("--data-batch", type=int, default=2, help="images per collated batch in the pipeline measurement")
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=LOSSES)
    p.add_argument("--loss-crop", type=int, nargs=2, default=[256, 512], help="H W of the loss/metric inputs")
    p.add_argument("--ref-model", choices=MODEL_CHOICES, default="unet_slim",
                   help="model of the loss-step, metric and Lightning-loop measurements (the default run's model)")
    p.add_argument("--loop-crop", type=int, default=128)
    p.add_argument("--loop-batch", type=int, default=None,
                   help="batch of the Lightning run and its bare step (default: train.yaml's data.batch_size, 16)")
    p.add_argument("--loop-batches", type=int, default=40, help="timed Lightning batches")
    p.add_argument("--loop-skip", type=int, default=3, help="warm-up Lightning batches not timed (worker start-up)")
    p.add_argument("--loop-workers", default="auto",
                   help="dataloader workers of the Lightning run (default: auto, as data.num_workers)")
    p.add_argument("--slide-model", choices=MODEL_CHOICES, default="enet")
    p.add_argument("--slide-image", type=int, nargs=2, default=[1024, 2048])
    p.add_argument("--slide-window", type=int, nargs=2, default=[512, 1024])
    p.add_argument("--window-batch", type=int, default=4)
    args = p.parse_args(argv)
    if args.data_rounds < 1 or args.data_seconds <= 0:
        p.error(f"--data-rounds must be >= 1 and --data-seconds > 0; got {args.data_rounds} and {args.data_seconds}")
    if args.quick:
        args.models = args.models or ["enet"]
        args.crop, args.crop_size, args.iters, args.warmup, args.peak_size = "cpu", 64, 1, 1, 512
        args.datasets = args.datasets or ["camvid"]
        args.data_seconds, args.data_rounds, args.loss_crop, args.loop_crop = 0.05, 1, [64, 64], 64
        args.loop_batches, args.loop_skip, args.loop_workers, args.loop_batch = 2, 1, "0", args.loop_batch or 2
        args.slide_image, args.slide_window = [128, 256], [64, 128]
        args.losses = (["ce", *[n for n in args.losses if n in DISTANCE_LOSSES]] if args.losses == LOSSES
                       else args.losses)
    # steps at paper crops take seconds and vary little; 128x128 ones take tens of ms and need more tries
    paper = args.crop == "paper"
    args.iters = args.iters if args.iters is not None else (2 if paper else 4)
    args.warmup = args.warmup if args.warmup is not None else (1 if paper else 2)
    args.models = args.models or ARCHITECTURES
    names = args.datasets or [d[0] for d in DATASETS]
    args.datasets = [d for d in DATASETS if d[0] in names]
    if args.quick:  # quick: the miniature trees' own image size (no rewrite at the official size)
        args.datasets = [(n, o, (48, 64)) for n, o, _ in args.datasets]
    if "ce" not in args.losses:
        args.losses = ["ce", *args.losses]
    return args


def write_report(results: dict[str, Any], out: Path, started: float) -> None:
    """Write benchmark.json and benchmark.md with the sections measured so far."""
    with contextlib.suppress(OSError):
        results["machine"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    results["seconds"] = time.perf_counter() - started
    results["targets"] = [{"target": t, "measured": m, "ratio": r, "met": ok} for t, m, r, ok in target_rows(results)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "benchmark.md").write_text(markdown(results) + "\n")


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
    results: dict[str, Any] = {"machine": machine_info(device), "settings": {
        "quick": args.quick, "batch": args.batch, "crop": args.crop, "crop_desc": crop_desc,
        "num_classes": args.num_classes, "iters": args.iters, "warmup": args.warmup, "peak_size": args.peak_size,
        "compile": args.compile, "data_seconds": args.data_seconds, "data_rounds": args.data_rounds,
        "backbone": args.backbone, "matmul_precision": args.matmul_precision,
        "cudnn_benchmark": args.cudnn_benchmark, "malloc_tuning": malloc_tuned}}
    started = time.perf_counter()
    peak = None
    if "peak" in args.sections or "models" in args.sections:
        print("peak GEMM", flush=True)
        peak = results["peak"] = peak_matmul(device, args.peak_size, max(args.iters, 3))
        for prec in ("fp32", "bf16"):
            print(f"  {prec} {peak[prec]:.0f} GFLOP/s (a @ b {peak['paths']['matmul'][prec]:.0f}, "
                  f"1x1 conv {peak['paths']['conv1x1'][prec]:.0f})", flush=True)
    def bench_models() -> list[dict[str, Any]]:
        results["models"] = []
        for name in args.models:
            results["models"].append(bench_model(name, args, peak, device))
            write_report(results, args.out, started)
        return results["models"]

    sections: dict[str, Callable[[], Any]] = {
        "models": bench_models,
        "data": lambda: bench_data(args),
        "losses": lambda: bench_losses(args, device),
        "metrics": lambda: bench_metrics(args, device),
        "loop": lambda: bench_loop(args, device),
        "slide": lambda: bench_slide(args, device),
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
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
