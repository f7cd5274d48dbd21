"""Section `losses`: every loss's forward + backward time relative to cross-entropy, and the training
step of the losses that take precomputed maps (`target_fn`) relative to the CE step."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite import catalog
from segsuite.benchmark.nets import build_model, total_loss
from segsuite.benchmark.timing import best_time

TARGET = 1.25  # a map-taking loss's training step, at most this many CE steps


def default_losses() -> list[str]:
    """Every shipped loss, cross-entropy (the reference) first."""
    names = catalog.config_names("loss")
    return ["ce", *[n for n in names if n != "ce"]]


def build_loss(name: str) -> torch.nn.Module:
    """`loss=<name>` with ignore index 255."""
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": catalog.group_config("loss", name)})
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


def measure(args, device: torch.device) -> dict[str, Any]:
    """Loss-only times of `--losses`, and interleaved training steps of CE and the map-taking ones."""
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
    model = build_model(args.ref_model, args.num_classes).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, *crop, device=device).contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, fused=True)

    def step(name: str) -> Callable[[], None]:
        def run():
            optimizer.zero_grad(set_to_none=True)
            total_loss(losses[name], model(x), target, **extras[name]).backward()
            optimizer.step()
        return run

    step_names = ["ce", *[n for n in args.losses if n != "ce" and catalog.loss_needs_maps(n)]]
    step_s = {name: math.inf for name in step_names}
    for name in step_names:
        step(name)()  # warm-up
    for _ in range(max(args.iters, 1)):  # interleaved rounds: load changes hit every loss alike
        for name in step_names:
            step_s[name] = min(step_s[name], best_time(step(name), 0, 1, device))
    rows = [{"loss": n, "loss_ms": loss_s[n] * 1e3, "loss_ratio": loss_s[n] / loss_s["ce"],
             "step_ms": step_s[n] * 1e3 if n in step_s else None,
             "step_ratio": step_s[n] / step_s["ce"] if n in step_s else None,
             "takes_maps": catalog.loss_needs_maps(n), "worker_ms_per_sample": worker_ms[n]} for n in args.losses]
    for r in rows:
        print(f"  {r['loss']:14s} loss fwd+bwd {r['loss_ms']:.1f} ms ({r['loss_ratio']:.2f}x CE)"
              + (f", step {r['step_ms']:.0f} ms ({r['step_ratio']:.2f}x CE)" if r["step_ms"] else ""), flush=True)
    return {"crop": list(crop), "batch": args.batch, "num_classes": args.num_classes, "step_model": args.ref_model,
            "rows": rows}


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """A map-taking loss's training step within the target multiple of the CE step."""
    return [(f"{r['loss']} step <= {TARGET}x CE step", f"{r['step_ms']:.0f} ms",
             f"{r['step_ratio']:.2f}x", r["step_ratio"] <= TARGET)
            for r in results.get("losses", {}).get("rows", [])
            if r.get("takes_maps") and r["step_ratio"] is not None]


def render(results: dict[str, Any]) -> list[str]:
    """The losses table."""
    if not results.get("losses"):
        return []
    lo = results["losses"]
    lines = [(f"Losses: logits [{lo['batch']},{lo['num_classes']},{lo['crop'][0]},{lo['crop'][1]}]; "
              "maps precomputed (worker cost per sample shown); "
              f"step = {lo['step_model']} forward + loss + backward + fused SGD."), "",
             "| loss | fwd+bwd ms | × CE | training step ms | × CE step | worker target_fn ms/sample |",
             "|---|---|---|---|---|---|"]
    for r in lo["rows"]:
        step = f"{r['step_ms']:.0f} | {r['step_ratio']:.2f}" if r["step_ms"] is not None else "- | -"
        lines.append(f"| {r['loss']} | {r['loss_ms']:.1f} | {r['loss_ratio']:.2f} | {step} "
                     f"| {r['worker_ms_per_sample']:.1f} |")
    lines.append("")
    return lines
