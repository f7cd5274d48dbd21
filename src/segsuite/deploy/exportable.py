"""Export-friendly equivalents of the two ops the tracer cannot record with dynamic sizes, and
`exportable(net)`: a copy of a network with those modules swapped (by type, nothing patched)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segsuite.models.ops import MaxUnpool2x


class ExportableAdaptiveAvgPool2d(nn.Module):
    """`nn.AdaptiveAvgPool2d(bins)` from prefix sums, so the bin edges follow the traced input size.

    ONNX has no adaptive pooling with an output other than 1x1; PyTorch's bin i over a side of n
    spans [floor(i*n/b), ceil((i+1)*n/b)). Box sums are separable: rows first, then columns.
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        self.output_size = tuple(int(v) for v in size)

    @staticmethod
    def _pool(x: torch.Tensor, bins: int, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        prefix = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim=dim)
        i = torch.arange(bins, device=x.device)
        start = torch.div(i * n, bins, rounding_mode="floor")
        end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
        sums = prefix.index_select(dim, end) - prefix.index_select(dim, start)
        shape = [1] * x.dim()
        shape[dim] = bins
        return sums / (end - start).to(x.dtype).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self._pool(self._pool(x.double(), self.output_size[0], x.dim() - 2), self.output_size[1], x.dim() - 1)
        return pooled.to(x.dtype)


def exportable_max_unpool2x(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Max-unpool by 2 (2x2, stride 2) as a scatter into zeros whose size follows the traced input."""
    zeros = F.interpolate(torch.zeros_like(x), scale_factor=2.0, mode="nearest")
    out = zeros.flatten(2).scatter(2, indices.flatten(2), x.flatten(2))
    return out.reshape(zeros.shape)


class ExportableMaxUnpool2x(nn.Module):
    """`segsuite.models.ops.MaxUnpool2x` as `exportable_max_unpool2x`."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return exportable_max_unpool2x(x, indices)


def exportable(net: nn.Module) -> nn.Module:
    """A copy of `net` with adaptive average pooling (bins > 1) and max-unpooling modules replaced by
    their exportable equivalents (same results, sizes that follow the traced input)."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, ExportableAdaptiveAvgPool2d(child.output_size))
            elif isinstance(child, MaxUnpool2x):
                setattr(parent, name, ExportableMaxUnpool2x())
    return net


def trace_input(net: nn.Module, size: Sequence[int]) -> torch.Tensor:
    """A random input of `size`; raises if both sides are multiples of the model's padding stride
    (the trace would then record "no padding" and fail at other sizes)."""
    divisor = int(getattr(net, "size_divisor", 1))
    height, width = (int(v) for v in size)
    if divisor > 1 and height % divisor == 0 and width % divisor == 0:
        raise ValueError(f"sample_size={[height, width]}: both sides are multiples of the model's stride "
                         f"{divisor}, so its internal padding would not be traced; pick e.g. "
                         f"{[height + 1, width + 1]}")
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
