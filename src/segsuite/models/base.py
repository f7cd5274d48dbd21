"""The model contract shared by every architecture: any input size in, logits at that size out."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad `x` ([N,C,H,W]) at the bottom/right so H and W are multiples of `multiple`.

    Returns the padded tensor and the original (H, W) for cropping back.
    """
    h, w = x.shape[-2:]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (h, w)


class SegmentationModel(nn.Module):
    """Base class: pads the input to `size_divisor`, runs `forward_logits`, crops back.

    Subclasses implement `forward_logits(x) -> logits | (logits, [aux, ...])` on an input whose
    sides are multiples of `size_divisor`; logits may be at any resolution (they are resized
    bilinearly to the padded input size). Auxiliary outputs are returned only in training mode.
    Subclasses that have a pretrained encoder take it built (a `segsuite.models.backbones.base.Backbone`,
    from the config's `backbone:` node) and keep it as `self.backbone`, so the optimizer can give it
    its own learning-rate multiplier.

    Every concrete architecture also states the setting of its paper, which the catalog reports:
    `paper_crop` (training crop, H x W) and `paper_dataset` (the dataset it was trained on there).
    They are required; `paper_setting` raises naming the class that lacks them.
    """

    size_divisor: int = 32
    paper_crop: ClassVar[tuple[int, int]]
    paper_dataset: ClassVar[str]

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    @classmethod
    def paper_setting(cls) -> tuple[tuple[int, int], str]:
        """(paper_crop, paper_dataset) of the architecture; a TypeError if it does not declare them."""
        missing = [name for name in ("paper_crop", "paper_dataset") if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"{cls.__name__} must declare the class attribute(s) {missing} (see SegmentationModel)")
        return cls.paper_crop, cls.paper_dataset

    def forward_logits(self, x: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def _restore(self, logits: torch.Tensor, padded_hw: tuple[int, int], hw: tuple[int, int]):
        if logits.shape[-2:] != padded_hw:
            logits = F.interpolate(logits, size=padded_hw, mode="bilinear", align_corners=False)
        return logits[..., : hw[0], : hw[1]]

    def forward(self, x: torch.Tensor):
        x, hw = pad_to_multiple(x, self.size_divisor)
        padded_hw = (x.shape[-2], x.shape[-1])
        out = self.forward_logits(x)
        if isinstance(out, (tuple, list)):
            logits, aux = out
            logits = self._restore(logits, padded_hw, hw)
            if self.training:
                return logits, [self._restore(a, padded_hw, hw) for a in aux]
            return logits
        return self._restore(out, padded_hw, hw)
