"""Head blocks shared by several architectures: conv-BN-ReLU, ASPP, pyramid pooling, FCN head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segsuite.models.nchw import NCHWConv2d
from segsuite.utils.layout import cat_channels


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize `x` to spatial `size` (no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias) + BatchNorm + ReLU; padding keeps the size for odd kernels.

    `nchw_on_cpu` makes the convolution an `NCHWConv2d` (for wide convolutions, where oneDNN's
    fp32 channels_last kernels are slow).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1,
                 nchw_on_cpu: bool = False) -> None:
        conv = NCHWConv2d if nchw_on_cpu else nn.Conv2d
        super().__init__(
            conv(
                in_ch, out_ch, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class PooledConvBNReLU(ConvBNReLU):
    """`ConvBNReLU` for pooled features: with one value per channel (batch of one pooled to 1x1)
    BatchNorm cannot compute batch statistics, so that call normalises with the running ones
    instead of failing; every other call is plain training-mode BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self
        x = conv(x)
        if self.training and x.numel() == x.shape[1]:
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            return relu(x)
        return relu(bn(x))


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (dilated) conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU (DeepLabv3+)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                in_ch, in_ch, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                groups=in_ch, bias=False,
            ),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


def conv_bn_relu(
    in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1, separable: bool = False
) -> nn.Sequential:
    """A `ConvBNReLU`, or a `SeparableConvBNReLU` when `separable` and the kernel is larger than 1."""
    if separable and kernel_size > 1:
        return SeparableConvBNReLU(in_ch, out_ch, kernel_size, dilation)
    return ConvBNReLU(in_ch, out_ch, kernel_size, dilation)


class ImagePooling(nn.Module):
    """Global average pooling + 1x1 conv-BN-ReLU, broadcast back to the input size."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = PooledConvBNReLU(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x)).expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabv3): 1x1, 3x3 at each rate, image pooling; 1x1 fusion.

    Args:
        in_ch: input channels.
        out_ch: channels of every branch and of the output (paper: 256).
        rates: dilation rates of the 3x3 branches (paper: 6, 12, 18 at output stride 16).
        separable: depthwise-separable 3x3 branches (DeepLabv3+).
        dropout: dropout after the fusion conv.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_ch, out_ch, 1)]
        branches += [conv_bn_relu(in_ch, out_ch, 3, int(rate), separable) for rate in rates]
        branches.append(ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNReLU(len(branches) * out_ch, out_ch, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(cat_channels([branch(x) for branch in self.branches], like=x))


class PyramidPooling(nn.Module):
    """Pyramid Pooling Module (PSPNet): the input concatenated with pooled, projected, upsampled copies.

    Each bin `b` average-pools the input to `b x b` (adaptive, so any input size works), projects it
    with a 1x1 conv-BN-ReLU to `branch_ch`, and upsamples it bilinearly back to the input size.
    Output channels: `in_ch + len(bins) * branch_ch`.
    """

    def __init__(self, in_ch: int, branch_ch: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(int(b)), PooledConvBNReLU(in_ch, branch_ch, 1)) for b in bins
        )
        self.out_channels = in_ch + len(bins) * branch_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return cat_channels([x] + [resize_to(stage(x), size) for stage in self.stages], like=x)


class FCNHead(nn.Module):
    """3x3 conv-BN-ReLU to `in_ch // 4` channels, dropout, 1x1 classifier (PSPNet/UperNet aux head)."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, in_ch // 4, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_ch // 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))
