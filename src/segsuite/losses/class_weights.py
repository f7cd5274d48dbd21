"""Class weights from the training set: median-frequency balancing (Eigen & Fergus 2015, SegNet)
or ENet's 1 / ln(c + p_c) (Paszke et al. 2016).

A run weights classes with one setting, `class_weights` (train.yaml: null | auto | a list of C floats),
which every loss config's class-weight slot reads (`weight: ${oc.select:class_weights,null}`, nested
for the boundary loss's region term). `auto` there, or a loss's own `weight: auto`, resolves to the
weights of the training split (`resolve_run_class_weights`)."""

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
    """Paths of every `weight: auto` in a plain loss config (nested configs included)."""
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


def auto_weight_paths(loss_cfg: DictConfig) -> list[tuple]:
    """Paths of every `weight` of `loss_cfg` (also nested) that is `auto`, itself (`loss.weight=auto`) or
    through the run's `class_weights=auto`."""
    return _auto_paths(OmegaConf.to_container(loss_cfg, resolve=True))


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


def training_class_weights(dataset: Any, cache_dir: Path, method: str = "median_frequency",
                           c: float = 1.02) -> list[float]:
    """Per-class weights of `dataset` (the training split built with transform=None), logged.

    Cached in `cache_dir/class_weights.json` under dataset name + split + size + num_classes + method + a
    fingerprint of the mask files (resolved paths, sizes, mtimes): a second run does not read the masks.
    """
    num_classes = int(getattr(dataset, "num_classes", len(getattr(dataset, "classes", ()))))
    if num_classes <= 0:
        raise ValueError("class weights: the dataset exposes no classes; cannot size the weights")
    ignore_index = int(getattr(dataset, "ignore_index", 255))
    cache_file = Path(cache_dir) / "class_weights.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    key = cache_key(dataset, num_classes, method, c)
    if key in cache and len(cache[key]) == num_classes:
        weights = [float(w) for w in cache[key]]
        log.info("class weights (%s) from cache %s [%s]", method, cache_file, key)
    else:
        weights = compute_class_weights(dataset, num_classes, method, c, ignore_index)
        cache[key] = weights
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    names = list(getattr(dataset, "classes", [str(i) for i in range(num_classes)]))
    log.info("class weights (%s): %s", method, ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights)))
    return weights


def _set_auto_weights(loss_cfg: DictConfig, weights: list[float]) -> DictConfig:
    """Every `auto` weight of `loss_cfg` (`auto_weight_paths`) set to `weights`, in place."""
    for path in auto_weight_paths(loss_cfg):
        node: Any = loss_cfg
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = ListConfig([float(w) for w in weights])
    return loss_cfg


def resolve_auto_weights(loss_cfg: DictConfig, dataset: Any, cache_dir: Path, method: str = "median_frequency",
                         c: float = 1.02) -> DictConfig:
    """Replace every `auto` weight in `loss_cfg` (in place; also nested) by the weights of `dataset` (the
    training split built with transform=None; `training_class_weights`). Returns `loss_cfg`. Configs without
    `auto` are returned untouched (no data pass)."""
    if not auto_weight_paths(loss_cfg):
        return loss_cfg
    return _set_auto_weights(loss_cfg, training_class_weights(dataset, cache_dir, method, c))


def resolve_run_class_weights(cfg: DictConfig, dataset: Any, cache_dir: Path) -> None:
    """In a run config, in place: `class_weights: auto` and every `auto` weight of `cfg.loss` become the weights
    of `dataset` (the checked training split, transform=None) by `cfg.class_weights_method`, so the config the
    run records holds the weights it trained with."""
    if not has_auto_weights(cfg.loss):
        return
    weights = training_class_weights(dataset, cache_dir, method=cfg.get("class_weights_method", "median_frequency"))
    if cfg.get("class_weights") == "auto":
        cfg.class_weights = ListConfig(weights)
    _set_auto_weights(cfg.loss, weights)  # a loss's own `weight: auto`


def has_auto_weights(loss_cfg: DictConfig) -> bool:
    """Whether any `weight` in `loss_cfg` (also nested) is `auto`, itself or through `class_weights=auto`."""
    return bool(auto_weight_paths(loss_cfg))
