"""PSPNet (Zhao et al. 2017): a dilated ResNet with a Pyramid Pooling Module.

The backbone runs at output stride 8 (layer3/layer4 dilated by 2/4). Its last stage is pooled to
1x1, 2x2, 3x3 and 6x6 bins, each reduced by a 1x1 conv to C/N channels (N = number of bins, C the
backbone's width: 2048 -> 512 for ResNet-50), upsampled and concatenated with the feature itself;
a 3x3 conv to 512 channels, dropout 0.1 and a 1x1 classifier follow. An auxiliary FCN head on
layer3 (3x3 conv to C3/4 channels, dropout, 1x1 classifier) adds deep supervision during training
(paper loss weight 0.4, set by the module's `aux_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel
from segsuite.models.blocks import ConvBNReLU, FCNHead, PyramidPooling


class PSPNet(SegmentationModel):
    """PSPNet on a backbone (paper: ResNet-50 / ResNet-101 at output stride 8).

    Args:
        num_classes: number of output classes.
        backbone: the encoder (four stages); the PPM pools its last feature, the aux head reads
            its third.
        bins: pyramid pooling bin sizes (paper: 1, 2, 3, 6).
        head_channels: channels of the 3x3 conv after pooling (paper: 512).
        dropout: dropout before the classifiers (paper: 0.1).
        aux_head: build the auxiliary FCN head on layer3.
    """

    paper_crop = (713, 713)
    paper_dataset = "Cityscapes"

    def __init__(self, num_classes: int, backbone: Backbone, bins: Sequence[int] = (1, 2, 3, 6),
                 head_channels: int = 512, dropout: float = 0.1, aux_head: bool = True) -> None:
        super().__init__(num_classes)
        if not bins:
            raise ValueError("PSPNet bins must list at least one bin size, e.g. [1, 2, 3, 6]")
        self.backbone = backbone
        self.size_divisor = backbone.output_stride
        top = self.backbone.channels[-1]
        self.ppm = PyramidPooling(top, top // len(bins), bins)
        self.bottleneck = ConvBNReLU(self.ppm.out_channels, head_channels, 3, nchw_on_cpu=True)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        self.aux_head = FCNHead(self.backbone.channels[2], num_classes, dropout) if aux_head else None

    def forward_logits(self, x: torch.Tensor):
        features = self.backbone(x)
        logits = self.classifier(self.dropout(self.bottleneck(self.ppm(features[-1]))))
        if self.aux_head is None or not self.training:
            return logits  # the aux head only serves the training loss
        return logits, [self.aux_head(features[2])]
