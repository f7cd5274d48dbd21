"""The splits' augmentation pipelines, with their final normalisation moved onto the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from segsuite.data.transforms import DeviceNormalize, build_pipeline, split_off_normalize


class SplitPipelines:
    """The pipelines of `augmentation` (`train`, `val`), and the normalisation moved out of them.

    With `on_device`, a pipeline's final `albumentations.Normalize` leaves it: the workers ship uint8
    images and masks (4x and 8x fewer bytes, no float conversion in the worker), and `to_model_input`
    applies the same normalisation to the batch on its device. Every pipeline must then normalise
    alike (one `device_normalize`).
    """

    def __init__(self, augmentation: DictConfig, on_device: bool = True) -> None:
        self.augmentation = augmentation
        self.on_device = on_device
        self.device_normalize: DeviceNormalize | None = None  # None: the workers normalise

    def build(self, name: str) -> tuple[Callable[..., dict[str, Any]], bool]:
        """`augmentation.<name>` built, and whether its Normalize moved onto the device (its images stay uint8)."""
        pipeline = self.augmentation[name]
        if not self.on_device:
            return build_pipeline(pipeline), False
        stripped, normalize = split_off_normalize(pipeline)
        if normalize is None:
            return build_pipeline(pipeline), False
        if self.device_normalize is not None and normalize != self.device_normalize:
            raise ValueError(
                f"augmentation.{name} normalises with mean {normalize.mean}, std {normalize.std}, but another "
                f"pipeline uses mean {self.device_normalize.mean}, std {self.device_normalize.std}; use one "
                f"normalisation for every split, or set data.normalize_on_device=false"
            )
        self.device_normalize = normalize
        return build_pipeline(stripped), True

    def to_model_input(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as the model and loss take it: float32 normalised images, int64 masks."""
        batch = dict(batch)
        if batch["image"].dtype == torch.uint8:
            if self.device_normalize is None:
                raise RuntimeError("uint8 images reached the device but no normalisation was moved there; "
                                   "this datamodule's pipelines must end with albumentations.Normalize")
            batch["image"] = self.device_normalize(batch["image"])
        if isinstance(batch.get("mask"), torch.Tensor) and batch["mask"].dtype != torch.int64:
            batch["mask"] = batch["mask"].long()
        return batch
