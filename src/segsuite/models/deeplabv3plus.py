"""DeepLabv3+ (Chen et al. 2018): ASPP encoder on a dilated ResNet and a light decoder.

Encoder: ResNet at output stride 16 (layer4 dilated) or 8 (layer3 and layer4 dilated), followed by
ASPP with a 1x1 branch, three 3x3 branches at rates 6/12/18 (doubled to 12/24/36 at output stride
8), image-level pooling, all 256 channels, fused by a 1x1 conv. Decoder: the low-level feature
(layer1, stride 4) is projected to 48 channels by a 1x1 conv, concatenated with the 4x upsampled
encoder output, refined by two 3x3 convs of 256 channels and classified by a 1x1 conv; the logits
are upsampled 4x. Depthwise-separable 3x3 convs in ASPP and decoder are an option (the paper's
"DeepLabv3+ with separable convolution").
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.resnet import resnet
from segsuite.models.base import SegmentationModel
from segsuite.models.blocks import ASPP, ConvBNReLU, conv_bn_relu, resize_to


class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ on a ResNet.

    Args:
        num_classes: number of output classes.
        backbone: "resnet18" ... "resnet152" (paper: resnet101; Xception-65 is not provided).
        output_stride: 16 (paper's training setting) or 8.
        aspp_rates: ASPP rates at output stride 16 (paper: 6, 12, 18); doubled at output stride 8.
        multi_grid: layer4 multi-grid rates (DeepLabv3: [1, 2, 4]); null for none.
        aspp_channels: ASPP and decoder width (paper: 256).
        low_level_channels: projection width of the layer1 feature (paper: 48).
        separable: depthwise-separable 3x3 convs in ASPP and decoder.
        dropout: dropout after the ASPP fusion.
        in_channels, pretrained, frozen_stages, norm_eval, frozen_bn: passed to the ResNet.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        output_stride: int = 16,
        aspp_rates: Sequence[int] = (6, 12, 18),
        multi_grid: Sequence[int] | None = None,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        separable: bool = False,
        dropout: float = 0.1,
        in_channels: int = 3,
        pretrained: str | os.PathLike | None = None,
        frozen_stages: int = 0,
        norm_eval: bool = False,
        frozen_bn: bool = False,
    ) -> None:
        super().__init__(num_classes)
        if output_stride not in (8, 16):
            raise ValueError(f"DeepLabV3Plus output_stride must be 8 or 16, got {output_stride}")
        self.backbone = resnet(
            backbone, in_channels=in_channels, output_stride=output_stride, multi_grid=multi_grid,
            pretrained=pretrained, frozen_stages=frozen_stages, norm_eval=norm_eval, frozen_bn=frozen_bn,
        )
        self.size_divisor = output_stride
        rates = [int(r) * 16 // output_stride for r in aspp_rates]
        self.aspp = ASPP(self.backbone.channels[-1], aspp_channels, rates, separable, dropout)
        self.low_level = ConvBNReLU(self.backbone.channels[0], low_level_channels, 1)
        self.decoder = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, aspp_channels, 3, separable=separable),
            conv_bn_relu(aspp_channels, aspp_channels, 3, separable=separable),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        low = self.low_level(features[0])
        high = resize_to(self.aspp(features[-1]), low.shape[-2:])
        return self.classifier(self.decoder(torch.cat([high, low], dim=1)))
