"""SegNet (Badrinarayanan, Kendall & Cipolla 2017).

Encoder: the 13 convolutions of VGG16-BN (no fully connected layers); each of its five 2x2
max-pools stores the argmax locations. Decoder: the mirror image; each stage upsamples with
max-unpooling at the stored locations of the matching encoder pool (a sparse map, no learned
upsampling), then densifies it with 3x3 conv + BN + ReLU layers. A final 3x3 convolution gives
the class scores. Encoder weights are loaded only when the backbone's `pretrained` names a checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segsuite.models.backbones.vgg import VGG, VGG16_STAGES
from segsuite.models.base import SegmentationModel
from segsuite.models.ops import MaxUnpool2x


def conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    """3x3 conv (no bias, BN follows) + BN + ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


def decoder_widths() -> list[list[int]]:
    """Output widths of each decoder stage's convs, deepest first (mirror of VGG16's encoder).

    The last conv of each stage narrows to the next stage's width; the shallowest stage ends
    in the classifier, so it keeps its 64 channels here.
    """
    encoder = [list(widths) for widths in VGG16_STAGES]
    stages = []
    for i in reversed(range(len(encoder))):
        widths = list(reversed(encoder[i]))
        if i > 0:
            widths[-1] = encoder[i - 1][-1]
        else:
            widths = widths[:-1]
        stages.append(widths)
    return stages


class SegNet(SegmentationModel):
    """SegNet with a VGG16 encoder (paper: VGG16-BN) and a max-unpooling decoder.

    Args:
        num_classes: number of output classes.
        backbone: the VGG encoder, without fc6/fc7 (`fully_conv=False`); SegNet runs its stages
            itself to keep each pool's argmax indices.
    """

    paper_crop = (360, 480)
    paper_dataset = "CamVid"

    def __init__(self, num_classes: int, backbone: VGG) -> None:
        super().__init__(num_classes)
        if not isinstance(backbone, VGG) or backbone.fully_conv:
            raise ValueError("SegNet needs a VGG backbone without fc6/fc7 (fully_conv: false)")
        self.size_divisor = 32
        self.backbone = backbone
        stages = []
        channels = backbone.channels[-1]
        for widths in decoder_widths():
            layers: list[nn.Module] = []
            for width in widths:
                layers += conv_bn_relu(channels, width)
                channels = width
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.unpool = MaxUnpool2x()
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1)
        for m in [*self.decoder.modules(), self.classifier]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder; return the pool5 map and each pool's argmax indices (shallowest first)."""
        indices = []
        for i in range(len(self.backbone.channels)):
            x, idx = F.max_pool2d(self.backbone.stage(i)(x), 2, 2, return_indices=True)
            indices.append(idx)
        return x, indices

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x, indices = self.encode(x)
        for stage, idx in zip(self.decoder, reversed(indices)):
            x = stage(self.unpool(x, idx))
        return self.classifier(x)
