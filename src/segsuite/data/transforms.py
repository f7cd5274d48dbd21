"""Transforms that albumentations lacks, used from `conf/augmentation/*.yaml`, and the device-side
normalisation the datamodule moves `albumentations.Normalize` into."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.augmentations.crops import functional as fcrops
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict


class RandomCropUpTo(A.RandomCrop):
    """Random crop of at most `height` x `width`; a side shorter than the crop is kept whole.

    Unlike `RandomCrop(pad_if_needed=True)` it never pads, so photometric transforms placed after
    it (as in MMSegmentation: crop, flip, photometric distortion, then pad) never alter padding,
    and they run on the crop only. Follow it with `PadIfNeeded` (image 0, mask 255).
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        size = (min(self.height, height), min(self.width, width))
        coords = fcrops.get_crop_coords((height, width), size, self.py_random.random(), self.py_random.random())
        return {"crop_coords": coords, "pad_params": None}


NORMALIZE_TARGET = "albumentations.Normalize"


class DeviceNormalize:
    """`albumentations.Normalize` (standard mode) applied to a batch on its device.

    `(pixels - mean * max_pixel_value) / (std * max_pixel_value)` per channel, for `[N,C,H,W]`
    images of any dtype (uint8 from the workers); returns float32.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], max_pixel_value: float = 255.0) -> None:
        self.mean, self.std, self.max_pixel_value = list(mean), list(std), float(max_pixel_value)
        self._shift = torch.tensor(self.mean, dtype=torch.float32) * self.max_pixel_value
        self._scale = 1.0 / (torch.tensor(self.std, dtype=torch.float32) * self.max_pixel_value)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        channels = images.shape[-3]
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            raise ValueError(f"images have {channels} channels but the normalisation has mean {self.mean}, "
                             f"std {self.std}; make dataset.mean/std match the images (one value or one per channel)")
        if images.device not in self._on_device:  # copied to each device once, not per batch
            self._on_device[images.device] = (self._shift.to(images.device).view(-1, 1, 1),
                                              self._scale.to(images.device).view(-1, 1, 1))
        shift, scale = self._on_device[images.device]
        return (images.float() - shift).mul_(scale)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeviceNormalize) and (self.mean, self.std, self.max_pixel_value) == (
            other.mean, other.std, other.max_pixel_value)


def split_off_normalize(pipeline_cfg: DictConfig) -> tuple[DictConfig, DeviceNormalize | None]:
    """Remove a trailing `albumentations.Normalize` (standard mode) from a Compose config node.

    Returns the pipeline without it and the same normalisation as a `DeviceNormalize`, or the
    pipeline unchanged and None when it does not end with one (nothing is moved then).
    """
    transforms = list(pipeline_cfg.get("transforms") or [])
    if not transforms or transforms[-1].get("_target_") != NORMALIZE_TARGET:
        return pipeline_cfg, None
    normalize = instantiate(transforms[-1])
    if getattr(normalize, "normalization", "standard") != "standard":
        return pipeline_cfg, None
    mean = np.atleast_1d(np.asarray(normalize.mean, dtype=np.float64)).tolist()
    std = np.atleast_1d(np.asarray(normalize.std, dtype=np.float64)).tolist()
    stripped = pipeline_cfg.copy()
    with open_dict(stripped):
        stripped.transforms = transforms[:-1]
    return stripped, DeviceNormalize(mean, std, normalize.max_pixel_value)
