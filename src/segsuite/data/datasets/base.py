"""The dataset contract: `dataset[i]` -> {"image", "mask", "name"} in train ids.

Subclasses implement `__len__` and `load(index) -> (image uint8 [H,W,3] RGB, mask int64 [H,W]
in train ids, name)` and set `classes` and `palette`. The base class validates labels, applies
the (albumentations) transform with a per-sample seed, converts to tensors, and implements
`skip_bad`: a bad sample's item is `{"name": name, "skipped": message}` (no image, no mask), which
`segsuite.data.datamodule.collate` drops from its batch and reports; no other sample takes its place.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or holds labels that do not fit the dataset."""


def check_mask(mask: np.ndarray, num_classes: int, name: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise `DatasetError` naming `name` if `mask` holds values outside [0, C) and ignore."""
    bad = (mask < 0) | ((mask >= num_classes) & (mask != ignore_index))
    if bad.any():
        values = np.unique(mask[bad])[:10].tolist()
        raise DatasetError(
            f"{name}: label values {values} are outside the {num_classes} classes (0..{num_classes - 1}) "
            f"and the ignore index {ignore_index}. Check that the dataset config matches the files "
            f"(wrong dataset, unconverted label encoding, or a colour PNG instead of an index PNG)."
        )


def check_sizes(image: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Raise `DatasetError` if image and mask sizes differ."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(
            f"{name}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); they must match."
        )


def seed_transform(transform: Callable[..., Any], seed: int) -> None:
    """Seed an albumentations pipeline for one sample: one numpy and one Python generator, shared
    by all its transforms, which draw from them in turn (albumentations' own unseeded behaviour).

    `Compose.set_random_seed(seed)` would instead give every transform its own generators with
    the same seed, so their draws coincide: flip and colour jitter (both p=0.5) would always be
    applied together, and the scale factor would fix the crop position. It also builds 14
    generators per sample instead of 2.
    """
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    elif hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class SegDataset(Dataset):
    """Base class of every segmentation dataset.

    Args:
        transform: albumentations-style callable `transform(image=, mask=) -> dict`, producing a
            float32 normalised HWC image; `None` returns raw uint8 image and int64 mask arrays.
        skip_bad: a bad sample gives `{"name", "skipped": message naming the file}` instead of raising
            (warned once per file and process); `collate` drops it and reports it. Files left out
            when the split was listed (an image without its mask) are named in `left_out`.
        target_fn: optional callable `mask (np.int64 [H,W]) -> dict[str, np.ndarray]` of extra
            per-pixel targets (e.g. distance maps a loss asks for), computed in the worker.
        uint8_output: return the transform's image as it comes (uint8 when the pipeline does not
            normalise), as a `[3,H,W]` view of its HWC pixels, and the mask as uint8: a quarter and
            an eighth of the bytes to ship from the workers, and no transposing copy.
            `SegDataModule` sets it when it moves `Normalize` onto the device
            (`data.normalize_on_device`); the default keeps the float32 / int64 contract.
    """
    # (height, width) of the released images (most of them, where sizes vary); None for procedural or own
    # data. The benchmark and the loading-speed tests rewrite the fixture trees at this size.
    official_image_size: ClassVar[tuple[int, int] | None] = None
    # What the catalog, the test fixtures and the error messages know of a dataset, declared on its class (None
    # for procedural data): the tree of files it reads under `dataset.root` and where to get it (both named
    # when a folder or file is missing); the raw values its released label files hold (classes, void,
    # unlabeled; None where the config decides, as for your own data: 0..C-1 and 255); and how the label
    # files store them: "png_grey" (single-channel PNG), "png_palette" (palette PNG, index = value) or
    # "mat_S" (.mat file, variable S).
    tree: ClassVar[str | None] = None
    download: ClassVar[str | None] = None
    raw_label_values: ClassVar[tuple[int, ...] | None] = None
    label_encoding: ClassVar[str | None] = None

    classes: Sequence[str] = ()
    palette: np.ndarray = np.zeros((0, 3), dtype=np.uint8)
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        transform: Callable[..., dict[str, Any]] | None = None,
        skip_bad: bool = False,
        target_fn: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
        uint8_output: bool = False,
    ) -> None:
        self.transform = transform
        self.uint8_output = uint8_output
        self.skip_bad = skip_bad
        self.target_fn = target_fn
        self.bad_items: set[int] = set()  # warned about in this process
        self.left_out: list[str] = []     # files left out of the split when it was listed (skip_bad)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:  # pragma: no cover
        """Return (image uint8 [H,W,3] RGB, mask int64 [H,W] train ids, name)."""
        raise NotImplementedError

    def load_valid(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """`load` plus the size and label checks; raises `DatasetError` naming the file."""
        image, mask, name = self.load(index)
        check_sizes(image, mask, name)
        check_mask(mask, self.num_classes, name, self.ignore_index)
        return image, mask, name

    def load_checked(self, index: int) -> tuple[np.ndarray, np.ndarray, str] | str:
        """`load_valid`; with `skip_bad`, a bad sample gives the message naming its file instead
        (warned once per file in this process) and never another sample in its place."""
        try:
            return self.load_valid(index)
        except DatasetError as err:
            if not self.skip_bad:
                raise
            message = self._naming(index, str(err))
            if index not in self.bad_items:
                self.bad_items.add(index)
                warnings.warn(f"skipping bad sample: {message}", stacklevel=2)
                log.warning("skipping bad sample: %s", message)
            return message

    def _naming(self, index: int, message: str) -> str:
        """`message`, prefixed with the sample's files unless it names one already."""
        sample = getattr(self, "samples", None)
        sample = sample[index] if sample is not None else None
        if sample is None or str(sample.image) in message or str(sample.mask) in message:
            return message
        return f"{sample.mask} (image {sample.image}): {message}"

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        loaded = self.load_checked(index)
        if isinstance(loaded, str):  # skip_bad: collate drops it and reports the message
            samples = getattr(self, "samples", None)
            return {"name": samples[index].name if samples is not None else str(index), "skipped": loaded}
        image, mask, name = loaded
        if self.transform is None:
            return {"image": image, "mask": mask, "name": name}
        if seed is not None:
            seed_transform(self.transform, seed)
        # uint8 masks augment 1.5-2x faster than int64 (labels are <= 255 by contract)
        out = self.transform(image=image, mask=mask.astype(np.uint8))
        if self.uint8_output:  # a [3,H,W] view of the HWC pixels: collate stacks them without transposing
            image_t = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1)
            mask_t = torch.from_numpy(np.ascontiguousarray(out["mask"], dtype=np.uint8))
        else:
            image_t = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
            mask_t = torch.from_numpy(np.asarray(out["mask"], dtype=np.int64))
        item: dict[str, Any] = {"image": image_t, "mask": mask_t, "name": name}
        if self.target_fn is not None:
            for key_, value in self.target_fn(np.asarray(out["mask"], dtype=np.int64)).items():
                item[key_] = torch.from_numpy(np.ascontiguousarray(value))
        return item
