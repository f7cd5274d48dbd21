"""Step-time cost of the distance-map losses relative to cross-entropy (slow benchmark).

Run: PYTHONPATH=src python -m pytest -m slow -s tests/test_losses_speed.py
The training step (slim U-Net, 19 classes, 256x512, batch 2, forward + backward + SGD step) is
timed with the ground-truth maps precomputed as the dataloader workers would; the time those
workers spend per sample in `target_fn` is reported separately.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.data.datasets import SyntheticShapes
from segsuite.models.unet import UNet

LOSS_DIR = Path(__file__).resolve().parents[1] / "conf" / "loss"
TARGET_RATIO = 1.25


def build(name: str):
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": OmegaConf.load(LOSS_DIR / f"{name}.yaml")})
    return instantiate(cfg.loss)


@pytest.mark.slow
def test_distance_losses_step_within_target_of_ce():
    torch.manual_seed(0)
    data = SyntheticShapes(num_images=2, image_size=(256, 512), num_classes=19, objects_per_image=(8, 12))
    masks = [data[i]["mask"] for i in range(2)]
    target = torch.from_numpy(np.stack(masks))
    images = torch.randn(2, 3, 256, 512)
    model = UNet(num_classes=19, base_channels=16, batch_norm=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    names = ["ce", "dpce", "boundary", "hausdorff"]
    losses, extras, worker_ms = {}, {}, {}
    for name in names:
        losses[name] = loss = build(name)
        extras[name] = {}
        if hasattr(loss, "target_fn"):
            start = time.perf_counter()
            items = [loss.target_fn(m) for m in masks]
            worker_ms[name] = (time.perf_counter() - start) / len(masks) * 1e3
            extras[name] = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

    def step(name: str) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses[name](model(images), target, **extras[name]).backward()
        optimizer.step()
        return time.perf_counter() - start

    times = {name: [] for name in names}
    for name in names:
        step(name)  # warm-up
    rng = np.random.default_rng(0)
    for _ in range(6):  # interleaved rounds in shuffled order; the minimum is the least disturbed
        for name in rng.permutation(names):
            times[name].append(step(name))
    best = {name: min(ts) for name, ts in times.items()}
    for name in names:
        print(f"{name:10s} step {best[name] * 1e3:8.1f} ms  ratio to ce {best[name] / best['ce']:.3f}  "
              f"target_fn {worker_ms.get(name, 0.0):6.1f} ms/sample")
    for name in names[1:]:
        assert best[name] / best["ce"] < TARGET_RATIO, name
