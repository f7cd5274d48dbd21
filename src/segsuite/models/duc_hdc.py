"""ResNet-DUC-HDC (Wang et al. 2018, "Understanding Convolution for Semantic Segmentation").

Hybrid Dilated Convolution (HDC): the ResNet runs at output stride 8, but instead of one rate per
dilated stage (2 in layer3 / res4, 4 in layer4 / res5), consecutive blocks cycle through rates
such as 1, 2, 5, 9 so that the sampled grid has no holes ("gridding"). Dense Upsampling
Convolution (DUC): 3x3 convolutions on the stride-d feature predict d^2 * C channels, which are
rearranged (pixel shuffle) into a C-channel map at full resolution, so upsampling is learned
instead of bilinear.

The defaults are the authors' released network (TuSimple-DUC, `networks/resnet.py` and
`networks/network_duc_hdc.py`, the Cityscapes ResNet-101 model):

- res4 (layer3) rates, block by block: 2, then 2, 5, 9, 1 repeated (2, 2, 5, 9, 1, 2, 5, 9, ...,
  1, 2, 5); the first block (the projection block res4a) uses 2, not the cycle's 1.
- res5 (layer4) rates 5, 9, 17.
- DUC: the sum of four 3x3 convolutions (with bias) at rates 6, 12, 18, 24 ("ASPP" DUC), each to
  64 * C channels, then the pixel shuffle by 8. No dropout before it.
- ResNet-101, 19 Cityscapes classes: 132,158,272 parameters here (132.2 M).

One deliberate difference: the released ResNet-101 has a deep stem (three 3x3 convolutions
3->64->64->128, so layer1 takes 128 channels; 123,776 parameters more, 132.28 M in all). segsuite
keeps torchvision's ResNet (7x7 stem) so that torchvision's ImageNet checkpoints load by name.
`duc_rates: [1]` (one plain 3x3 conv, 64.9 M) is the light variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel

# The released network's rates (its backbone's are set in conf/model/duc_hdc.yaml's `backbone:` node).
RELEASED_DUC_RATES = (6, 12, 18, 24)


class DenseUpsamplingConv(nn.Module):
    """Sum of 3x3 convs (one per rate) to `num_classes * factor**2` channels, pixel-shuffled."""

    def __init__(
        self, in_ch: int, num_classes: int, factor: int, rates: Sequence[int] = RELEASED_DUC_RATES
    ) -> None:
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
    """A dilated backbone (HDC rates set on it) with a Dense Upsampling Convolution head.

    Args:
        num_classes: number of output classes.
        backbone: the encoder (paper: ResNet-101 at output stride 8 with the released per-block
            rates, `layer3_dilations` / `layer4_dilations` of its config node). The DUC upsamples
            its last feature by its output stride.
        duc_rates: dilation rates of the summed DUC convolutions (released: 6, 12, 18, 24;
            [1]: one plain 3x3 conv, a quarter of the head).
        dropout: dropout on the backbone feature before the DUC layer (released: none).
    """

    paper_crop = (544, 544)
    paper_dataset = "Cityscapes"

    def __init__(self, num_classes: int, backbone: Backbone, duc_rates: Sequence[int] = RELEASED_DUC_RATES,
                 dropout: float = 0.0) -> None:
        super().__init__(num_classes)
        self.backbone = backbone
        self.size_divisor = backbone.output_stride
        self.dropout = nn.Dropout2d(dropout)
        self.duc = DenseUpsamplingConv(backbone.channels[-1], num_classes, backbone.output_stride, duc_rates)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.duc(self.dropout(self.backbone(x)[-1]))
