"""UPerNet (Xiao et al. 2018), the scene-parsing branch of Unified Perceptual Parsing.

A Pyramid Pooling Module (bins 1, 2, 3, 6) on the last ResNet stage gives the top of a Feature
Pyramid Network: 1x1 lateral convs bring layer1..layer3 to 512 channels, each is summed with the
upsampled level above, and a 3x3 conv smooths it. All four levels are upsampled to stride 4,
concatenated and fused by a 3x3 conv (512) before the 1x1 classifier. An auxiliary FCN head on
layer3 gives deep supervision during training (loss weight 0.4 as in PSPNet; set by the module's
`aux_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel
from segsuite.models.blocks import ConvBNReLU, FCNHead, PyramidPooling, resize_to


class UPerNet(SegmentationModel):
    """UPerNet on a backbone (paper: ResNet-50 / ResNet-101 at output stride 32).

    Args:
        num_classes: number of output classes.
        backbone: the encoder; the PPM pools its last feature, every other one gets a lateral,
            and the aux head reads the third.
        channels: width of the PPM branches, the FPN and the fusion conv (paper: 512).
        bins: pyramid pooling bin sizes (paper: 1, 2, 3, 6).
        dropout: dropout before the classifiers.
        aux_head: build the auxiliary FCN head on layer3.
    """

    paper_crop = (512, 512)
    paper_dataset = "ADE20K"

    def __init__(self, num_classes: int, backbone: Backbone, channels: int = 512, bins: Sequence[int] = (1, 2, 3, 6),
                 dropout: float = 0.1, aux_head: bool = True) -> None:
        super().__init__(num_classes)
        self.backbone = backbone
        self.size_divisor = backbone.output_stride
        stage_channels = backbone.channels
        self.ppm = PyramidPooling(stage_channels[-1], channels, bins)
        self.ppm_bottleneck = ConvBNReLU(self.ppm.out_channels, channels, 3)
        self.laterals = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in stage_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in stage_channels[:-1])
        self.fuse = ConvBNReLU(len(stage_channels) * channels, channels, 3, nchw_on_cpu=True)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.aux_head = FCNHead(stage_channels[2], num_classes, dropout) if aux_head else None

    def forward_logits(self, x: torch.Tensor):
        features = self.backbone(x)
        top = self.ppm_bottleneck(self.ppm(features[-1]))
        pyramid = [lateral(f) for lateral, f in zip(self.laterals, features[:-1])] + [top]
        for level in range(len(pyramid) - 2, -1, -1):
            pyramid[level] = pyramid[level] + resize_to(pyramid[level + 1], pyramid[level].shape[-2:])
        outputs = [conv(p) for conv, p in zip(self.fpn_convs, pyramid[:-1])] + [top]
        size = outputs[0].shape[-2:]
        fused = self.fuse(torch.cat([resize_to(o, size) for o in outputs], dim=1))
        logits = self.classifier(self.dropout(fused))
        if self.aux_head is None or not self.training:
            return logits  # the aux head only serves the training loss
        return logits, [self.aux_head(features[2])]
