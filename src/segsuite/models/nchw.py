"""`NCHWConv2d`: a convolution that runs in NCHW on the CPU in float32 inside a channels_last network."""

from __future__ import annotations

import torch
from torch import nn

from segsuite.utils.layout import is_channels_last, relayout


class NCHWConv2d(nn.Conv2d):
    """`nn.Conv2d` that runs in NCHW on the CPU in float32, whatever layout it is given.

    oneDNN's fp32 channels_last kernels are slow on the CPU for very wide convolutions, mostly
    in the weight gradient: for the 3x3 convolution 2048 -> 512 at 128x128 that fuses UPerNet's
    FPN levels (batch 2, two threads) it takes 2.9 s in NHWC against 1.5 s in NCHW. Whole
    training steps at the papers' crops, channels_last fp32, this class against `nn.Conv2d`
    alternating in one process: UPerNet (its fuse conv) 8.46 -> 7.44 s, PSPNet (its
    4096 -> 512 bottleneck) 12.35 -> 11.43 s, FCN-8s (its 7x7 fc6) 3.49 -> 3.30 s. Dilated
    ResNet 3x3s are 1.2-1.4x faster this way in isolation but not inside DeepLabV3+ or PSPNet,
    where the layout copies eat the gain, so the backbones keep `nn.Conv2d`. In bf16 (autocast)
    and on GPUs the channels_last kernels are as fast or faster, and there it is a plain
    convolution.

    Input and output keep the network's layout, and so do their gradients. Parameters, their
    names and their layout are those of `nn.Conv2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
                or not is_channels_last(x)):
            return super().forward(x)
        out = self._conv_forward(relayout(x, torch.contiguous_format), self.weight.contiguous(), self.bias)
        return relayout(out, torch.channels_last)
