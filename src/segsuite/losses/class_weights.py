"""Class weights from the training set: median-frequency balancing (Eigen & Fergus 2015, SegNet)
or ENet's 1 / ln(c + p_c) (Paszke et al. 2016); `weight: auto` in loss configs resolves to them."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

log = logging.getLogger(__name__)

METHODS = ("median_frequency", "enet")
WEIGHT_KEYS = ("weight",)


def class_pixel_counts(dataset: Any, num_classes: int, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """(pixels per class, pixels of the images containing each class), over `dataset[i]["mask"]`."""
    counts = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc="class frequencies", unit="img"):
        item = dataset[i]
        if "skipped" in item:  # a bad sample left out (data.skip_bad); the run names it
            continue
        mask = np.asarray(item["mask"])
        labels = mask[mask != ignore_index]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"class weights: mask {i} holds labels outside 0..{num_classes - 1} and {ignore_index}; "
                "check num_classes and that the dataset returns train ids"
            )
        per_image = np.bincount(labels, minlength=num_classes)
        counts += per_image
        image_pixels[per_image > 0] += labels.size
    return counts, image_pixels


def compute_class_weights(dataset: Any, num_classes: int, method: str = "median_frequency", c: float = 1.02,
                          ignore_index: int = 255) -> list[float]:
    """Per-class weights from the masks of `dataset` (built with transform=None).

    median_frequency: freq_c = pixels of c / pixels of the images where c occurs;
        w_c = median(freq) / freq_c (median over the classes that occur); classes never seen get 0.
    enet: p_c = pixels of c / all labelled pixels; w_c = 1 / ln(c + p_c).
    """
    if method not in METHODS:
        raise ValueError(f"class weights: method={method!r}; expected one of {METHODS}")
    counts, image_pixels = class_pixel_counts(dataset, num_classes, ignore_index)
    if counts.sum() == 0:
        raise ValueError("class weights: the dataset has no labelled pixels")
    if method == "enet":
        return (1.0 / np.log(c + counts / counts.sum())).tolist()
    seen = counts > 0
    freq = np.where(seen, counts / np.maximum(image_pixels, 1), 0.0)
    if not seen.all():
        log.warning("class weights: classes %s never occur; their weight is 0", np.flatnonzero(~seen).tolist())
    median = float(np.median(freq[seen]))
    return np.where(seen, median / np.where(seen, freq, 1.0), 0.0).tolist()


def _auto_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths of every `weight: auto` in a loss config (nested configs included)."""
    paths = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in WEIGHT_KEYS and value == "auto":
                paths.append(prefix + (key,))
            else:
                paths.extend(_auto_paths(value, prefix + (key,)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths.extend(_auto_paths(value, prefix + (i,)))
    return paths


def mask_fingerprint(dataset: Any) -> str:
    """Short digest of the mask files' resolved paths, sizes and mtimes (`dataset.samples` of (image, mask)
    pairs with a `mask` field): two copies of a dataset at different roots, or edited masks, get different keys.
    '' without samples."""
    samples = getattr(dataset, "samples", None)
    if not samples:
        return ""
    digest = hashlib.sha1()
    for sample in samples:
        mask = getattr(sample, "mask", None)
        if mask is None:
            return ""
        mask = Path(mask)
        try:
            stat = mask.stat()
            digest.update(f"{mask.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{mask}|missing\n".encode())
    return digest.hexdigest()[:12]


def cache_key(dataset: Any, num_classes: int, method: str, c: float) -> str:
    """Dataset name, split, size, class count, method and the masks' fingerprint."""
    name = getattr(dataset, "name", None) or type(dataset).__name__
    split = getattr(dataset, "split", "train")
    suffix = f"-c{c}" if method == "enet" else ""
    fingerprint = mask_fingerprint(dataset)
    return (f"{name}-{split}-n{len(dataset)}-C{num_classes}-{method}{suffix}"
            + (f"-f{fingerprint}" if fingerprint else ""))


def resolve_auto_weights(loss_cfg: DictConfig, dataset: Any, cache_dir: Path, method: str = "median_frequency",
                         c: float = 1.02) -> DictConfig:
    """Replace every `weight: auto` in `loss_cfg` (in place; also nested) by weights of `dataset`.

    `dataset` is the training split built with transform=None. Weights are cached in
    `cache_dir/class_weights.json` under dataset name + split + size + num_classes + method + a fingerprint
    of the mask files (resolved paths, sizes, mtimes), and
    logged. Returns `loss_cfg`. Configs without `auto` are returned untouched (no data pass).
    """
    paths = _auto_paths(OmegaConf.to_container(loss_cfg, resolve=False))
    if not paths:
        return loss_cfg
    num_classes = int(getattr(dataset, "num_classes", len(getattr(dataset, "classes", ()))))
    if num_classes <= 0:
        raise ValueError("resolve_auto_weights: the dataset exposes no classes; cannot size the weights")
    ignore_index = int(getattr(dataset, "ignore_index", 255))
    cache_file = Path(cache_dir) / "class_weights.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    key = cache_key(dataset, num_classes, method, c)
    if key in cache and len(cache[key]) == num_classes:
        weights = cache[key]
        log.info("class weights (%s) from cache %s [%s]", method, cache_file, key)
    else:
        weights = compute_class_weights(dataset, num_classes, method, c, ignore_index)
        cache[key] = weights
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    names = list(getattr(dataset, "classes", [str(i) for i in range(num_classes)]))
    log.info("class weights (%s): %s", method, ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights)))
    for path in paths:
        node: Any = loss_cfg
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = ListConfig([float(w) for w in weights])
    return loss_cfg


def has_auto_weights(loss_cfg: DictConfig) -> bool:
    """Whether any `weight` in `loss_cfg` (also nested) is `auto`."""
    return bool(_auto_paths(OmegaConf.to_container(loss_cfg, resolve=False)))
