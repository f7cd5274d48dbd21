"""Global Convolutional Network (Peng et al. 2017, "Large Kernel Matters").

Each ResNet stage (strides 4, 8, 16, 32) feeds a Global Convolutional Network block, a k x k
receptive field built from two separable paths, (k x 1 then 1 x k) + (1 x k then k x 1), with no
normalisation or non-linearity (paper k = 15), mapping it to class scores; a Boundary Refinement
block (residual x + conv3x3(relu(conv3x3(x)))) refines each score map. From the top, scores are
upsampled 2x by transposed convolutions (initialised bilinear), summed with the next finer stage
and refined again; two more deconv + BR steps bring stride 4 to full resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel
from segsuite.models.ops import bilinear_upsampler
from segsuite.utils.layout import memory_format_of


class RowConv2d(nn.Conv2d):
    """`nn.Conv2d(in_ch, out_ch, (1, k), padding=(0, k // 2))`, same parameters and result; on the
    CPU computed as the k x 1 convolution of the spatially transposed input.

    oneDNN's weight gradient for 1 x k kernels is several times slower than for k x 1 ones: on the
    2-core development machine, a 1 x 15 convolution 256 -> 19 channels on a 2 x 128 x 128 map took
    231 ms forward + backward as is and 78 ms transposed (two copies of the input included).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__(in_ch, out_ch, (1, kernel_size), padding=(0, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        xt = x.transpose(2, 3).contiguous(memory_format=fmt)
        out = F.conv2d(xt, self.weight.transpose(2, 3), self.bias, padding=(self.padding[1], 0))
        return out.transpose(2, 3).contiguous(memory_format=fmt)  # the input's layout, as nn.Conv2d returns


class _TapSum(torch.autograd.Function):
    """Sums the taps of the two paths' first (k-tap) convolutions, computed together as one 1 x 1.

    `z` has 2 * k * C channels, ordered (path, tap, channel). Path 0 is the k x 1 convolution:
    out0[c, i, j] = sum_t z[t * C + c, i + t - k // 2, j]. Path 1 is the 1 x k one: the same along
    the width, from channel k * C on. Taps that fall off the map count as zero (the convolutions'
    zero padding). Each tap is one strided add (forward) or copy (backward) of a C-channel slice.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.taps, ctx.shape, ctx.dtype, ctx.layout = taps, z.shape, z.dtype, memory_format_of(z)
        channels = z.shape[1] // (2 * taps)
        outs = []
        for path, dim in enumerate((2, 3)):
            # Accumulate in float32 (a convolution's own accumulator) and return z's dtype.
            out = torch.zeros_like(z[:, :channels], dtype=torch.float32, memory_format=ctx.layout)
            for first, (dst, src, length) in _tap_windows(taps, z.shape[dim], channels, path):
                out.narrow(dim, dst, length).add_(z[:, first:first + channels].narrow(dim, src, length))
            outs.append(out.to(z.dtype))
        return outs[0], outs[1]

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        taps, shape = ctx.taps, ctx.shape
        channels = shape[1] // (2 * taps)
        grad_z = torch.empty(shape, dtype=ctx.dtype, device=grads[0].device, memory_format=ctx.layout).zero_()
        for path, (dim, grad) in enumerate(zip((2, 3), grads)):
            for first, (dst, src, length) in _tap_windows(taps, shape[dim], channels, path):
                grad_z[:, first:first + channels].narrow(dim, src, length).copy_(grad.narrow(dim, dst, length))
        return grad_z, None


def _tap_windows(taps: int, size: int, channels: int, path: int) -> Iterator[tuple[int, tuple[int, int, int]]]:
    """For each tap that overlaps the map: its first channel in z, and (output start, input start,
    length) along the shifted dimension."""
    for tap in range(taps):
        shift = tap - taps // 2
        dst, end = max(0, -shift), min(size, size - shift)
        if end > dst:
            yield (path * taps + tap) * channels, (dst, dst + shift, end - dst)


class GlobalConvBlock(nn.Module):
    """Large k x k kernel as the sum of (k x 1 -> 1 x k) and (1 x k -> k x 1) convolutions.

    On the CPU the two first convolutions (in_ch -> out_ch, k taps each) run as one 1 x 1
    convolution with 2 * k * out_ch outputs, whose taps are then shifted and summed (`_TapSum`):
    the same products and sums, so the same result and the same counted FLOPs, with a wide
    output that oneDNN's channel blocks fill (the score maps' 19-21 channels do not). Under bf16
    autocast each tap is rounded to bf16 before the sum: the scores then differ from float32 by
    about as much as the plain convolutions' do (0.47% against 0.41% relative, 512 -> 19 at
    64 x 64). On the 2-core development CPU (batch 2, ResNet-50 stages at 512 x 512, forward +
    backward, channels_last) the four blocks take 166 ms instead of 290 in float32 and 102 instead
    of 129 in bf16; only maps of a few pixels are slower (0.3 ms per block). Same parameters and
    state-dict keys as the plain form, which runs on other devices and while tracing for export
    (the tap loop depends on the map size).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 15) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"GCN kernel_size must be a positive odd number (paper: 15), got {kernel_size}"
            )
        pad = kernel_size // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, (kernel_size, 1), padding=(pad, 0)),
            RowConv2d(out_ch, out_ch, kernel_size),
        )
        self.right = nn.Sequential(
            RowConv2d(in_ch, out_ch, kernel_size),
            nn.Conv2d(out_ch, out_ch, (kernel_size, 1), padding=(pad, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or torch.jit.is_tracing():
            return self.left(x) + self.right(x)
        first_left, first_right = self.left[0], self.right[0]
        taps = first_left.kernel_size[0]
        # (out, in, k, 1) and (out, in, 1, k) -> one (2 * k * out, in, 1, 1) weight, rows (path, tap, out).
        weight = torch.cat([first_left.weight[..., 0].permute(2, 0, 1), first_right.weight[:, :, 0].permute(2, 0, 1)])
        z = F.conv2d(x, weight.reshape(-1, weight.shape[-1], 1, 1))
        left, right = _TapSum.apply(z, taps)
        left = left + first_left.bias.to(left.dtype).view(1, -1, 1, 1)
        right = right + first_right.bias.to(right.dtype).view(1, -1, 1, 1)
        return self.left[1](left) + self.right[1](right)


class BoundaryRefinement(nn.Module):
    """Residual boundary refinement: x + conv3x3(relu(conv3x3(x)))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


def deconv2x(channels: int) -> nn.ConvTranspose2d:
    """Learned transposed conv (kernel 4, stride 2, padding 1) that doubles H and W; bilinear init."""
    return bilinear_upsampler(channels, 2, learnable=True)


class GCN(SegmentationModel):
    """Global Convolutional Network on a backbone whose stages have strides 4, 8, 16, 32.

    Args:
        num_classes: number of output classes.
        backbone: the encoder (the paper's reported results, PASCAL VOC 2012 and Cityscapes, use
            ResNet-152 at output stride 32). Every stage must halve the previous one's size.
        kernel_size: GCN kernel size k (paper: 15; odd).
        channels: width of the score maps; null uses num_classes as the paper does (a final 1x1
            classifier is added otherwise).
    """

    paper_crop = (512, 512)
    paper_dataset = "VOC"

    def __init__(self, num_classes: int, backbone: Backbone, kernel_size: int = 15,
                 channels: int | None = None) -> None:
        super().__init__(num_classes)
        if tuple(backbone.strides) != (4, 8, 16, 32):
            raise ValueError(f"GCN needs backbone stages at strides (4, 8, 16, 32) (output_stride 32), "
                             f"got {tuple(backbone.strides)}")
        self.backbone = backbone
        self.size_divisor = backbone.output_stride
        width = channels or num_classes
        stages = backbone.channels
        self.gcn = nn.ModuleList(GlobalConvBlock(c, width, kernel_size) for c in stages)
        self.stage_br = nn.ModuleList(BoundaryRefinement(width) for _ in stages)
        self.fuse_br = nn.ModuleList(BoundaryRefinement(width) for _ in stages[:-1])
        self.up = nn.ModuleList(deconv2x(width) for _ in stages[:-1])
        self.final = nn.ModuleList(
            nn.Sequential(deconv2x(width), BoundaryRefinement(width)) for _ in range(2)
        )
        self.classifier = nn.Conv2d(width, num_classes, 1) if channels else nn.Identity()

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        scores = [br(gcn(f)) for gcn, br, f in zip(self.gcn, self.stage_br, self.backbone(x))]
        out = scores[-1]
        for level in range(len(scores) - 2, -1, -1):
            out = self.fuse_br[level](scores[level] + self.up[level](out))
        for step in self.final:
            out = step(out)
        return self.classifier(out)
