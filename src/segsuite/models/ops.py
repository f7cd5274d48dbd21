"""Parameter-free operations and initialisers that several architectures share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaxUnpool2x(nn.Module):
    """Max-unpool by 2 at `indices` (from a 2x2 stride-2 max-pool of an even-sized map).

    A module without parameters, so export can find it by type and swap in an exportable form. The
    output size is passed as Python ints, which `torch.jit.trace` needs.
    """

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        size = [2 * int(s) for s in x.shape[-2:]]
        return F.max_unpool2d(x, indices, 2, 2, output_size=size)


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """A `[channels, channels, k, k]` transposed-conv weight that upsamples each channel bilinearly."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


def bilinear_upsampler(channels: int, factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """Transposed conv (kernel 2f, stride f, padding f/2, no bias) set to bilinear x`factor`.

    The output is exactly `factor` times the input size. `learnable=False` freezes the weight
    (`requires_grad=False`): fixed bilinear interpolation.
    """
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    up.weight.requires_grad_(learnable)
    return up
