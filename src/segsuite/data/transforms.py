"""Transforms that albumentations lacks, used from `conf/augmentation/*.yaml`, and the device-side
normalisation the datamodule moves `albumentations.Normalize` into."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.type_definitions import Targets
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict


class RandomScaleCrop(A.DualTransform):
    """`RandomScale` then a random crop of at most `height` x `width`, done in one step: only the
    part of the image that the crop keeps is resized.

    The factor s is uniform in `[1 + scale_limit[0], 1 + scale_limit[1]]`, as in `RandomScale`.
    The image would be `int(H*s)` x `int(W*s)`; the crop keeps at most `height` x `width` of it at a
    uniformly random position, and a side shorter than the crop whole. It never pads, so photometric
    transforms placed after it (as in MMSegmentation: crop, flip, photometric distortion, then pad)
    run on real pixels only; follow it with `PadIfNeeded` (image 0, mask 255). Here the
    source window under the crop, `crop/s` pixels, is cut first and resized to the crop size. For a
    375x500 VOC image at s = 2 and a 512x512 crop, a 256x256 window is resized instead of the
    whole image to 750x1000. The window is rounded to whole source pixels, so the factor applied
    can differ from s by half a source pixel over the window (0.2% for a 256-pixel window).
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(self, height: int, width: int, scale_limit: Sequence[float] = (-0.5, 1.0),
                 interpolation: int = cv2.INTER_LINEAR, mask_interpolation: int = cv2.INTER_NEAREST,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        low, high = (float(v) for v in scale_limit)
        if height < 1 or width < 1 or not -1.0 < low <= high:
            raise ValueError(f"RandomScaleCrop: expected a positive crop size and -1 < scale_limit[0] <= "
                             f"scale_limit[1]; got height={height}, width={width}, scale_limit={scale_limit}")
        self.height, self.width, self.scale_limit = int(height), int(width), (low, high)
        self.interpolation, self.mask_interpolation = interpolation, mask_interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale_limit) + 1.0
        windows = []
        for size, crop in ((height, self.height), (width, self.width)):
            scaled = max(int(size * scale), 1)
            out = min(crop, scaled)
            source = size if out == scaled else min(size, max(1, round(out / scale)))
            windows.append((min(int(self.py_random.random() * (size - source + 1)), size - source), source, out))
        (top, rows, out_h), (left, cols, out_w) = windows
        return {"window": (top, left, rows, cols), "out_size": (out_h, out_w)}

    def _resize(self, array: np.ndarray, window: tuple[int, int, int, int], out_size: tuple[int, int],
                interpolation: int) -> np.ndarray:
        top, left, rows, cols = window
        part = array[top:top + rows, left:left + cols]
        if (rows, cols) == out_size:
            return np.ascontiguousarray(part)
        return cv2.resize(part, (out_size[1], out_size[0]), interpolation=interpolation)

    def apply(self, img: np.ndarray, window: tuple[int, int, int, int], out_size: tuple[int, int],
              **params: Any) -> np.ndarray:
        return self._resize(img, window, out_size, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, window: tuple[int, int, int, int], out_size: tuple[int, int],
                      **params: Any) -> np.ndarray:
        return self._resize(mask, window, out_size, self.mask_interpolation)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "scale_limit", "interpolation", "mask_interpolation")


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


def build_pipeline(pipeline_cfg: DictConfig) -> Callable[..., dict[str, Any]]:
    """Instantiate an augmentation pipeline config with plain Python lists and dicts inside.

    With Hydra's default conversion, `Compose` would hold its transforms in an OmegaConf
    `ListConfig` and iterate that (slowly) on every sample.
    """
    return instantiate(pipeline_cfg, _convert_="all")


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
