"""U-Net (Ronneberger et al., 2015): a symmetric encoder-decoder with skip concatenation.

The defaults are the paper's network: widths 64-128-256-512-1024 (4 poolings), two 3x3
convolutions (with bias) + ReLU per level, 2x2 max-pooling down, 2x2 transposed convolutions up
(halving the channels), concatenation of the encoder feature at each level, a 1x1 classifier, and
He-normal initial weights; 31,031,810 parameters at 3 input channels and 2 classes. Convolutions
are padded so the output has the input's size (the paper's valid convolutions need a tiled crop;
padding is what every practical implementation does; it changes no parameter). Options: BatchNorm
after each convolution (`batch_norm`; the paper predates BatchNorm), bilinear upsampling, and
dropout at the end of the contracting path (the paper uses it without giving the rate; 0.5 is
customary). `conf/model/unet_slim.yaml` (width 16 + BatchNorm) is the CPU quick start's model.
"""

from __future__ import annotations

import torch
from torch import nn

from segsuite.models.base import SegmentationModel


class DoubleConv(nn.Sequential):
    """Two 3x3 conv (+BN) + ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = False) -> None:
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(
                nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """Upsample by 2 (transposed conv or bilinear + 1x1), concatenate the skip, DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int, bilinear: bool, batch_norm: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, in_ch // 2, 1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2)
        self.conv = DoubleConv(in_ch // 2 + out_ch, out_ch, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmentationModel):
    """U-Net with `depth` poolings; level widths are `base_channels * 2**level`.

    Args:
        num_classes: number of output classes.
        in_channels: input image channels.
        base_channels: width of the first level (paper: 64).
        depth: number of down-sampling steps (paper: 4, giving 64..1024).
        bilinear: bilinear up-sampling + 1x1 conv instead of transposed convolutions.
        batch_norm: BatchNorm after every 3x3 convolution (bias-free convs); not in the paper.
        dropout: dropout rate at the end of the contracting path (0 disables it).
    """

    paper_crop = (572, 572)
    paper_dataset = "ISBI"

    def __init__(self, num_classes: int, in_channels: int = 3, base_channels: int = 64, depth: int = 4,
                 bilinear: bool = False, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__(num_classes)
        self.size_divisor = 2**depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1], batch_norm))
            for i in range(depth)
        )
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], bilinear, batch_norm) for i in reversed(range(depth))
        )
        self.bottleneck_dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.bottleneck_dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.classifier(x)
