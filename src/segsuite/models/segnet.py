"""SegNet (Badrinarayanan, Kendall & Cipolla 2017).

Encoder: the 13 convolutions of VGG16-BN (no fully connected layers); each of its five 2x2
max-pools stores the argmax locations. Decoder: the mirror image; each stage upsamples with
max-unpooling at the stored locations of the matching encoder pool (a sparse map, no learned
upsampling), then densifies it with 3x3 conv + BN + ReLU layers. A final 3x3 convolution gives
the class scores. Weights are loaded only when `pretrained` names a checkpoint.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from segsuite.models.backbones.vgg import VGG, VGG16_STAGES
from segsuite.models.base import SegmentationModel


def max_unpool2x(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Max-unpool by 2 at `indices` (from a 2x2 stride-2 max-pool of an even-sized map).

    The output size is passed as Python ints, which `torch.jit.trace` needs.
    """
    size = [2 * int(s) for s in x.shape[-2:]]
    return F.max_unpool2d(x, indices, 2, 2, output_size=size)


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
    """SegNet with a VGG16-BN encoder and a max-unpooling decoder.

    Args:
        num_classes: number of output classes.
        in_channels: input image channels.
        pretrained: null, or a path/URL of a torchvision VGG16-BN checkpoint for the encoder.
        frozen_stages: leading encoder stages (0-5) whose parameters are frozen.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        pretrained: str | os.PathLike | None = None,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__(num_classes)
        self.size_divisor = 32
        self.backbone = VGG(
            batch_norm=True,
            in_channels=in_channels,
            pretrained=pretrained,
            frozen_stages=frozen_stages,
        )
        stages = []
        channels = self.backbone.stage_channels[-1]
        for widths in decoder_widths():
            layers: list[nn.Module] = []
            for width in widths:
                layers += conv_bn_relu(channels, width)
                channels = width
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1)
        for m in [*self.decoder.modules(), self.classifier]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder; return the pool5 map and each pool's argmax indices (shallowest first)."""
        indices = []
        for i in range(len(self.backbone.stage_channels)):
            x, idx = F.max_pool2d(self.backbone.stage(i)(x), 2, 2, return_indices=True)
            indices.append(idx)
        return x, indices

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x, indices = self.encode(x)
        for stage, idx in zip(self.decoder, reversed(indices)):
            x = stage(max_unpool2x(x, idx))
        return self.classifier(x)
