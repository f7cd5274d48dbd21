"""ResNet-DUC-HDC (Wang et al. 2018, "Understanding Convolution for Semantic Segmentation").

Hybrid Dilated Convolution (HDC): the ResNet runs at output stride 8, but instead of one rate per
dilated stage (2 in layer3 / res4b, 4 in layer4 / res5b), consecutive blocks cycle through rates
such as 1, 2, 5, 9 so that the sampled grid has no holes ("gridding"). Dense Upsampling
Convolution (DUC): a 3x3 convolution on the stride-d feature predicts d^2 * C channels, which are
rearranged (pixel shuffle) into a C-channel map at full resolution, so upsampling is learned
instead of bilinear. Optionally several dilated DUC convolutions are summed (the paper's ASPP-style
DUC layer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.resnet import resnet
from segsuite.models.base import SegmentationModel


class DenseUpsamplingConv(nn.Module):
    """Sum of 3x3 convs (one per rate) to `num_classes * factor**2` channels, pixel-shuffled."""

    def __init__(self, in_ch: int, num_classes: int, factor: int, rates: Sequence[int] = (1,)) -> None:
        super().__init__()
        if not rates:
            raise ValueError("DUC rates must list at least one dilation rate, e.g. [1]")
        out_ch = num_classes * factor * factor
        self.branches = nn.ModuleList(
            nn.Conv2d(in_ch, out_ch, 3, padding=int(r), dilation=int(r)) for r in rates
        )
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return self.shuffle(out)


class DUCHDC(SegmentationModel):
    """ResNet with Hybrid Dilated Convolution and a Dense Upsampling Convolution head.

    Args:
        num_classes: number of output classes.
        backbone: "resnet18" ... "resnet152" (paper: resnet101).
        layer3_dilations: rates cycled over layer3's blocks (res4b; paper's best: 1, 2, 5, 9).
        layer4_dilations: rates cycled over layer4's blocks (res5b; paper's best: 5, 9, 17).
        duc_rates: dilation rates of the summed DUC convolutions ([1]: one plain 3x3 conv).
        dropout: dropout on the backbone feature before the DUC layer.
        in_channels, pretrained, frozen_stages, norm_eval, frozen_bn: passed to the ResNet.
    """

    output_stride = 8

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        layer3_dilations: Sequence[int] = (1, 2, 5, 9),
        layer4_dilations: Sequence[int] = (5, 9, 17),
        duc_rates: Sequence[int] = (1,),
        dropout: float = 0.1,
        in_channels: int = 3,
        pretrained: str | os.PathLike | None = None,
        frozen_stages: int = 0,
        norm_eval: bool = False,
        frozen_bn: bool = False,
    ) -> None:
        super().__init__(num_classes)
        self.backbone = resnet(
            backbone, in_channels=in_channels, output_stride=self.output_stride,
            layer3_dilations=layer3_dilations, layer4_dilations=layer4_dilations, pretrained=pretrained,
            frozen_stages=frozen_stages, norm_eval=norm_eval, frozen_bn=frozen_bn,
        )
        self.size_divisor = self.output_stride
        self.dropout = nn.Dropout2d(dropout)
        top = self.backbone.channels[-1]
        self.duc = DenseUpsamplingConv(top, num_classes, self.output_stride, duc_rates)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.duc(self.dropout(self.backbone(x)[-1]))
