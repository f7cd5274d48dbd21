"""ENet (Paszke, Chaurasia, Kim & Culurciello 2016): a real-time encoder-decoder.

- Initial block: a 3x3 stride-2 convolution with 13 filters concatenated with a 2x2 max-pool of
  the input (3 channels), giving 16 channels at half resolution.
- Bottleneck: 1x1 projection to a quarter of the channels, a main convolution (regular 3x3,
  dilated 3x3, asymmetric 5x1 + 1x5, or a stride-2 transposed conv when upsampling), 1x1
  expansion, spatial dropout, added to a shortcut; BN after every convolution. A downsampling
  bottleneck replaces the projection by a 2x2 stride-2 conv and its shortcut max-pools (keeping
  the indices) and zero-pads channels; an upsampling bottleneck's shortcut is a 1x1 conv + BN
  followed by max-unpooling at the indices of the matching downsampling.
- Stages 1-3 (encoder) use PReLU and spatial dropout 0.01 (stage 1) / 0.1 (later); stages 2 and 3
  interleave dilations 2, 4, 8, 16 and asymmetric 5x5 convs.
- Stages 4-5 (decoder) follow the authors' released model (e-lab ENet-training, decoder.lua):
  ReLU, no dropout, and every bottleneck's internal width is a quarter of its *output* channels
  (16 in bottleneck 4.0, 4 in 5.0). A final 2x2 stride-2 transposed convolution gives
  full-resolution scores. 0.36 M parameters at 11 classes (paper: 0.37 M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segsuite.models.base import SegmentationModel
from segsuite.models.ops import MaxUnpool2x

# Stage 2 and 3 bottleneck sequence from the paper's Table 1: (kind, dilation or kernel).
STAGE_2_3 = (
    ("regular", 1),
    ("dilated", 2),
    ("asymmetric", 5),
    ("dilated", 4),
    ("regular", 1),
    ("dilated", 8),
    ("asymmetric", 5),
    ("dilated", 16),
)


def activation(prelu: bool, channels: int) -> nn.Module:
    """PReLU with one slope per channel (encoder) or ReLU (decoder)."""
    return nn.PReLU(channels) if prelu else nn.ReLU(inplace=True)


class InitialBlock(nn.Module):
    """3x3 stride-2 conv (out-in filters) concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_channels: int = 3, out_channels: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


def main_conv(kind: str, channels: int, param: int) -> list[nn.Module]:
    """The middle convolution(s) of a bottleneck; `param` is the dilation or asymmetric kernel size."""
    if kind == "regular":
        return [nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
    if kind == "dilated":
        return [nn.Conv2d(channels, channels, 3, padding=param, dilation=param, bias=False)]
    if kind == "asymmetric":
        pad = param // 2
        return [
            nn.Conv2d(channels, channels, (param, 1), padding=(pad, 0), bias=False),
            nn.Conv2d(channels, channels, (1, param), padding=(0, pad), bias=False),
        ]
    raise ValueError(
        f"unknown ENet bottleneck kind {kind!r}; expected regular, dilated or asymmetric"
    )


class Bottleneck(nn.Module):
    """Non-resampling bottleneck: x + dropout(expand(conv(project(x)))), then the activation."""

    def __init__(
        self,
        channels: int,
        kind: str = "regular",
        param: int = 1,
        dropout: float = 0.1,
        prelu: bool = True,
    ) -> None:
        super().__init__()
        internal = channels // 4
        self.branch = nn.Sequential(
            nn.Conv2d(channels, internal, 1, bias=False),
            nn.BatchNorm2d(internal),
            activation(prelu, internal),
            *main_conv(kind, internal, param),
            nn.BatchNorm2d(internal),
            activation(prelu, internal),
            nn.Conv2d(internal, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Dropout2d(dropout),
        )
        self.act = activation(prelu, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class DownsamplingBottleneck(nn.Module):
    """Halves the resolution; returns the output and the shortcut max-pool's indices."""

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float, prelu: bool = True
    ) -> None:
        super().__init__()
        internal = out_channels // 4
        self.extra_channels = out_channels - in_channels
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, internal, 2, stride=2, bias=False),
            nn.BatchNorm2d(internal),
            activation(prelu, internal),
            nn.Conv2d(internal, internal, 3, padding=1, bias=False),
            nn.BatchNorm2d(internal),
            activation(prelu, internal),
            nn.Conv2d(internal, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.act = activation(prelu, out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shortcut, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(shortcut + self.branch(x)), indices


class UpsamplingBottleneck(nn.Module):
    """Doubles the resolution; the shortcut max-unpools at the matching downsampling's indices.

    The internal width is `out_channels // 4`, as in the authors' decoder.
    """

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float = 0.0, prelu: bool = False
    ) -> None:
        super().__init__()
        internal = out_channels // 4
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, internal, 1, bias=False),
            nn.BatchNorm2d(internal),
            activation(prelu, internal),
            nn.ConvTranspose2d(
                internal, internal, 3, stride=2, padding=1, output_padding=1, bias=False
            ),
            nn.BatchNorm2d(internal),
            activation(prelu, internal),
            nn.Conv2d(internal, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.unpool = MaxUnpool2x()
        self.act = activation(prelu, out_channels)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.act(self.unpool(self.shortcut(x), indices) + self.branch(x))


class ENet(SegmentationModel):
    """ENet with the paper's stage layout (16 -> 64 -> 128 channels, output stride 8).

    Args:
        num_classes: number of output classes.
        in_channels: input image channels.
        stage1_dropout: spatial dropout in stage 1 (paper: 0.01).
        dropout: spatial dropout in the encoder's stages 2-3 (paper: 0.1).
        decoder_dropout: spatial dropout in stages 4-5 (authors' released model: none).
    """

    paper_crop = (512, 1024)
    paper_dataset = "Cityscapes"

    def __init__(self, num_classes: int, in_channels: int = 3, stage1_dropout: float = 0.01, dropout: float = 0.1,
                 decoder_dropout: float = 0.0) -> None:
        super().__init__(num_classes)
        self.size_divisor = 8
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, stage1_dropout)
        self.stage1 = nn.Sequential(*(Bottleneck(64, dropout=stage1_dropout) for _ in range(4)))
        self.down2 = DownsamplingBottleneck(64, 128, dropout)
        self.stage2 = nn.Sequential(*(Bottleneck(128, kind, p, dropout) for kind, p in STAGE_2_3))
        self.stage3 = nn.Sequential(*(Bottleneck(128, kind, p, dropout) for kind, p in STAGE_2_3))
        self.up4 = UpsamplingBottleneck(128, 64, decoder_dropout)
        self.stage4 = nn.Sequential(
            *(Bottleneck(64, dropout=decoder_dropout, prelu=False) for _ in range(2))
        )
        self.up5 = UpsamplingBottleneck(64, 16, decoder_dropout)
        self.stage5 = Bottleneck(16, dropout=decoder_dropout, prelu=False)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        x, indices1 = self.down1(x)
        x, indices2 = self.down2(self.stage1(x))
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, indices2))
        x = self.stage5(self.up5(x, indices1))
        return self.fullconv(x)
