"""Decode + augmentation throughput per worker (one process) at each dataset's official image size.

    # prints the table in the README (Datasets, loading speed):
    PYTHONPATH=src:tests python tests/test_datasets_speed.py

Files are written in each dataset's official layout and encoding at its official image size, with
photo-like content (smooth colour fields, edges and mild noise: compressed sizes close to real ones)
and region-shaped labels. The slow test asserts that one worker outpaces a typical GPU step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate

from segsuite.data.transforms import build_pipeline, split_off_normalize
from segsuite.testing import dataset_trees as trees
from segsuite.testing.dataset_trees import compose, rewrite_at_size

# (config, builder overrides, official image size H x W)
CASES = [
    ("camvid", [], (360, 480)),
    ("voc_aug", [], (375, 500)),
    ("cityscapes", [], (1024, 2048)),
    ("ade20k", [], (512, 683)),
    ("cocostuff164k", [], (480, 640)),
    ("cocostuff10k", [], (480, 640)),
    ("folder", trees.EXTRA_OVERRIDES["folder"], (512, 512)),
]


def rate(fn, count: int, min_seconds: float) -> float:
    fn(0)  # warm-up
    start, n = time.perf_counter(), 0
    while n < count or time.perf_counter() - start < min_seconds:
        fn(n % count)
        n += 1
    return n / (time.perf_counter() - start)


def measure(name: str, overrides: list[str], size: tuple[int, int], workdir: Path, min_seconds: float = 2.0) -> dict:
    trees.BUILDERS[name](workdir)
    cfg = compose(name, workdir, overrides)
    raw = instantiate(cfg.dataset.train, transform=None)
    rewrite_at_size(raw, name, size)
    stripped, normalize = split_off_normalize(cfg.augmentation.train)  # as the datamodule ships it
    augmented = instantiate(cfg.dataset.train, transform=build_pipeline(stripped), uint8_output=normalize is not None)
    count = len(raw)
    return {"dataset": name, "image": f"{size[0]}x{size[1]}",
            "crop": "x".join(str(v) for v in cfg.dataset.crop_size),
            "decode": rate(lambda i: raw[i], count, min_seconds),
            "decode_aug": rate(lambda i: augmented[(i, i)], count, min_seconds)}


def table(rows: list[dict]) -> str:
    lines = ["| dataset | image H×W | crop H×W | decode only (img/s) | decode + train augmentation (img/s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['image']} | {r['crop']} | {r['decode']:.0f} | {r['decode_aug']:.0f} |"
              for r in rows]
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, size", CASES, ids=[c[0] for c in CASES])
def test_one_worker_keeps_up(tmp_path, name, overrides, size):
    result = measure(name, overrides, size, tmp_path, min_seconds=1.0)
    assert result["decode_aug"] > 3.0, result  # one worker; a run uses several


if __name__ == "__main__":
    import cv2

    cv2.setNumThreads(1)
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(*case, Path(tmp)))
            print(rows[-1], flush=True)
    print(table(rows))
