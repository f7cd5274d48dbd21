"""`NCHWConv2d`: a convolution that runs in NCHW on the CPU in float32 inside a channels_last network."""

from __future__ import annotations

import torch
from torch import nn

from segsuite.utils.layout import is_channels_last, relayout


class NCHWConv2d(nn.Conv2d):
    """`nn.Conv2d` that runs in NCHW on the CPU in float32, whatever layout it is given.

    oneDNN's fp32 channels_last kernels are slow on the CPU for dilated and for very wide
    convolutions, mostly in the weight gradient. Forward plus backward, batch 2, two threads,
    channels_last against this class (conversions included): the 3x3 convolution 2048 -> 512 at
    128x128 that fuses UPerNet's FPN levels 1.27x faster here; PSPNet's 4096 -> 512 bottleneck
    at 90x90 1.25x; a dilated ResNet 3x3 (512 channels, rate 4, 90x90) 1.42x; FCN's 7x7 fc6 1.26x.
    Plain 3x3 and 1x1 convolutions lose (0.5-0.96x), so only those layers use it. In bf16
    (autocast) and on GPUs the channels_last kernels are as fast or faster, and there it is a
    plain convolution.

    Input and output keep the network's layout, and so do their gradients. Parameters, their
    names and their layout are those of `nn.Conv2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
                or not is_channels_last(x)):
            return super().forward(x)
        out = self._conv_forward(relayout(x, torch.contiguous_format), self.weight.contiguous(), self.bias)
        return relayout(out, torch.channels_last)
