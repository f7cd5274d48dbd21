"""The backbone interface every head builds on (as timm's `feature_info` and smp's encoders).

A backbone is an `nn.Module` whose `forward(x)` returns one feature map per stage, shallowest
first, and which describes those maps before it runs: `channels[i]` and `strides[i]` are the
channels and the output stride (input size / map size) of the i-th returned map. A head reads its
widths and its padding from that description and never from the backbone's class.
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class of the feature extractors: `forward(x) -> [stage features]`, described by
    `channels` and `strides` (one entry per returned map; set by the subclass)."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def output_stride(self) -> int:
        """Stride of the last (deepest) feature map."""
        return self.strides[-1]

    def stage_index(self, stride: int) -> int:
        """Index of the deepest feature map at `stride`; a ValueError names the strides there are."""
        matches = [i for i, s in enumerate(self.strides) if s == stride]
        if not matches:
            raise ValueError(f"{type(self).__name__} has no feature map at stride {stride}; its strides are "
                             f"{self.strides}")
        return matches[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
