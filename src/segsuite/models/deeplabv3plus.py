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

from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel
from segsuite.models.blocks import ASPP, ConvBNReLU, conv_bn_relu, resize_to


class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ on a backbone at output stride 16 or 8 (paper: ResNet-101; Xception-65 is not provided).

    Args:
        num_classes: number of output classes.
        backbone: the encoder; its first feature feeds the decoder, its last the ASPP. Its output
            stride (16, the paper's training setting, or 8) sets the ASPP rates' scale.
        aspp_rates: ASPP rates at output stride 16 (paper: 6, 12, 18); doubled at output stride 8.
        aspp_channels: ASPP and decoder width (paper: 256).
        low_level_channels: projection width of the layer1 feature (paper: 48).
        separable: depthwise-separable 3x3 convs in ASPP and decoder.
        dropout: dropout after the ASPP fusion.
    """

    paper_crop = (512, 1024)
    paper_dataset = "Cityscapes"

    def __init__(self, num_classes: int, backbone: Backbone, aspp_rates: Sequence[int] = (6, 12, 18),
                 aspp_channels: int = 256, low_level_channels: int = 48, separable: bool = False,
                 dropout: float = 0.1) -> None:
        super().__init__(num_classes)
        output_stride = backbone.output_stride
        if output_stride not in (8, 16):
            raise ValueError(f"DeepLabV3Plus needs a backbone at output stride 8 or 16, got {output_stride}")
        self.backbone = backbone
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
