"""Transforms that albumentations lacks, used from `conf/augmentation/*.yaml`."""

from __future__ import annotations

from typing import Any

import albumentations as A
from albumentations.augmentations.crops import functional as fcrops


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
