"""Section `data`: images/s of one dataloader worker, decode alone vs the shipped pipeline.

Each dataset's miniature tree in its official layout is built in a temp dir and rewritten at the
official image size (`official_image_size` on the dataset class). The trees are the tests' own
(`tests/support/dataset_trees.py`, test-side code): the benchmark is a developer tool and loads them
from the checkout it runs in (`fixture_trees`); outside a checkout the section says so and stops.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from hydra.utils import instantiate

from segsuite import catalog
from segsuite.benchmark.timing import best_interleaved_rates, best_time
from segsuite.utils.paths import config_dir

TARGET = 0.60  # the shipped pipeline's share of decode-only images/s, per worker


def checkout_tests() -> Path:
    """The `tests/` folder of the checkout segsuite runs from (beside `conf/`; absent in a wheel install)."""
    return config_dir().parent / "tests"


def fixture_trees(required: bool = True) -> ModuleType | None:
    """The tests' `support.dataset_trees` module, from the checkout; None (or, if `required`, an error
    saying what to do) when segsuite does not run from a checkout."""
    tests = checkout_tests()
    if not (tests / "support" / "dataset_trees.py").is_file():
        if not required:
            return None
        raise RuntimeError(f"the data section builds the tests' miniature dataset trees ({tests}/support/"
                           "dataset_trees.py), which only a checkout of segsuite has: run the benchmark from a "
                           "checkout (`make bench`), or leave the section out (--sections ...)")
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    return importlib.import_module("support.dataset_trees")


def datasets_with_trees() -> list[str]:
    """Datasets the section can measure: those with a miniature tree (outside a checkout, where there are
    none, every dataset that reads files, so that choosing one gets `fixture_trees`'s message)."""
    trees = fixture_trees(required=False)
    if trees is None:
        return [n for n in catalog.config_names("dataset") if catalog.needs_files(n)]
    return trees.datasets_with_trees()


def default_datasets() -> list[str]:
    """Datasets measured by default: those with a miniature tree and an official image size."""
    return [n for n in datasets_with_trees() if catalog.official_image_size(n) is not None]


def cases(names: list[str], size: tuple[int, int] | None = None) -> list[tuple[str, list[str], tuple[int, int]]]:
    """(dataset, tree overrides, image size) of each name: `size`, else the dataset's official size."""
    out = []
    for name in names:
        image = size or catalog.official_image_size(name)
        if image is None:
            cls = catalog.config_class("dataset", name)
            raise ValueError(f"dataset {name}: {cls.__module__}.{cls.__qualname__} declares no "
                             "`official_image_size`; declare it on the class, or run with --quick")
        out.append((name, fixture_trees().tree_overrides(name), image))
    return out


def bench_dataset(name: str, overrides: list[str], size: tuple[int, int], workdir: Path, args) -> dict[str, Any]:
    """One worker: decode alone vs decode + train augmentation + to-tensor + collate, as shipped.

    Shipped (`data.normalize_on_device=true`): workers ship uint8 images and masks, and the
    normalisation runs on the device after the transfer; its cost per image there is timed on its
    own. Beside it, the pipeline that normalises in the worker (`normalize_on_device=false`).
    """
    from segsuite.data.collate import collate
    from segsuite.data.transforms import build_pipeline, split_off_normalize

    trees = fixture_trees()
    trees.tree_builder(name)(workdir)
    cfg = trees.compose(name, workdir, overrides)
    raw = instantiate(cfg.dataset.train, transform=None)
    trees.rewrite_at_size(raw, size)
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


def measure(args) -> list[dict[str, Any]]:
    """Every `--datasets` case, with one torch and one OpenCV thread (a dataloader worker's)."""
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


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """The shipped pipeline at the target share of decode, per dataset."""
    return [(f"{r['dataset']} pipeline >= {TARGET:.0%} of decode (per worker)",
             f"{r['pipeline_ips']:.1f} vs {r['decode_ips']:.1f} img/s", f"{r['ratio']:.0%}", r["ratio"] >= TARGET)
            for r in results.get("data", [])]


def render(results: dict[str, Any]) -> list[str]:
    """The data pipelines table."""
    if not results.get("data"):
        return []
    lines = [("Data pipelines, one worker (1 torch / 1 OpenCV thread), train split, images per CPU-second "
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
    return lines
