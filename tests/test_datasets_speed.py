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

from segsuite import catalog
from segsuite.data.transforms import build_pipeline, split_off_normalize
from support.dataset_trees import compose, rewrite_at_size, tree_builder, tree_overrides


def cases() -> list[tuple[str, list[str], tuple[int, int]]]:
    """(dataset, tree overrides, image size) of every dataset with a miniature tree: its official image
    size (None where its class declares none: the test fails), for your own data its training crop."""
    out = []
    for name in catalog.config_names("dataset"):
        if tree_builder(name) is None:
            continue
        size = catalog.official_image_size(name)
        if size is None and catalog.own_data(name):
            size = tuple(catalog.group_config("dataset", name).crop_size)
        out.append((name, tree_overrides(name), size))
    return out


CASES = cases()


def rate(fn, count: int, min_seconds: float) -> float:
    fn(0)  # warm-up
    start, n = time.perf_counter(), 0
    while n < count or time.perf_counter() - start < min_seconds:
        fn(n % count)
        n += 1
    return n / (time.perf_counter() - start)


def measure(name: str, overrides: list[str], size: tuple[int, int], workdir: Path, min_seconds: float = 2.0) -> dict:
    tree_builder(name)(workdir)
    cfg = compose(name, workdir, overrides)
    raw = instantiate(cfg.dataset.train, transform=None)
    rewrite_at_size(raw, size)
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
    assert size is not None, f"{name}: its dataset class declares no `official_image_size`"
    result = measure(name, overrides, size, tmp_path, min_seconds=1.0)
    assert result["decode_aug"] > 3.0, result  # one worker; a run uses several


if __name__ == "__main__":
    import cv2

    cv2.setNumThreads(1)
    rows = []
    for case in (c for c in CASES if c[2] is not None):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(*case, Path(tmp)))
            print(rows[-1], flush=True)
    print(table(rows))
