#!/usr/bin/env python3
"""Time the pre-training data check (`data.verify`) on COCO-sized files: 640x480 JPEG + PNG labels.

    python scripts/time_data_check.py [--pairs 60]

Writes the pairs in the COCO-Stuff 164k layout to a temporary folder, then times `quick` and `full`
on one and two threads and a second, cached `full` run. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.catalog import group_config
from segsuite.data.verify import verify_split


def write_pairs(root: Path, pairs: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for split in ("train2017", "val2017"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for i in range(pairs):  # photo-like: smooth colour fields with sensor noise; labels: blocks of stuff ids
        image = np.stack([np.sin(xx / (20 + i) + c) * 60 + 120 + rng.normal(0, 20, xx.shape) for c in range(3)], -1)
        labels = ((xx // 80 + yy // 60 + i) % 171).astype(np.uint8)
        cv2.imwrite(str(root / "images/train2017" / f"{i:012d}.jpg"), image.clip(0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(root / "annotations/train2017" / f"{i:012d}.png"), labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cocostuff"
        write_pairs(root, args.pairs)
        cfg = OmegaConf.create({"paths": {"data_dir": tmp}, "dataset": group_config("dataset", "cocostuff164k")})
        cfg.dataset.root = str(root)
        dataset = instantiate(cfg.dataset.train, transform=None)
        for mode in ("quick", "full"):
            for workers in (1, 2):
                start = time.perf_counter()
                verify_split(dataset, "train", mode, None, workers=workers, progress=False)
                ms = 1000 * (time.perf_counter() - start) / len(dataset)
                print(f"{mode:5s} {workers} thread(s): {ms:.2f} ms per pair")
        cache = Path(tmp) / "cache"
        verify_split(dataset, "train", "full", cache, workers=2, progress=False)
        start = time.perf_counter()
        report = verify_split(dataset, "train", "full", cache, workers=2, progress=False)
        ms = 1000 * (time.perf_counter() - start) / len(dataset)
        print(f"full, second run: {report.cached} unchanged, {report.checked} decoded, {ms:.2f} ms per pair")


if __name__ == "__main__":
    main()
