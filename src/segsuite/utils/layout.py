"""Memory-format (layout) helpers whose gradients keep the layout the network runs in."""

from __future__ import annotations

from typing import Any

import torch


def is_channels_last(t: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out NHWC that is not also NCHW-contiguous (C or H*W of 1)."""
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """`torch.channels_last` for a tensor `is_channels_last` accepts, else `torch.contiguous_format`."""
    return torch.channels_last if is_channels_last(t) else torch.contiguous_format


class _Relayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.grad_format = memory_format_of(x)
        out = x.contiguous(memory_format=memory_format)
        return x.view_as(x) if out is x else out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.contiguous(memory_format=ctx.grad_format), None


def relayout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """`x.contiguous(memory_format=...)` whose gradient comes back in `x`'s own layout.

    `Tensor.contiguous` passes the gradient through in whatever layout the later ops produced, so
    a layout change inside a channels_last network (`NCHWConv2d`) would hand NCHW gradients to
    every earlier layer's backward, which then runs with mixed layouts (oneDNN reorders each time
    or picks slower kernels).
    """
    if not x.requires_grad or x.ndim != 4:
        return x.contiguous(memory_format=memory_format)
    return _Relayout.apply(x, memory_format)


def cat_channels(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """`torch.cat(tensors, dim=1)` laid out like `like`.

    `torch.cat` falls back to NCHW when any part is not channels_last, and a part broadcast from
    a pooled 1x1 map (PSPNet's and UPerNet's 1x1 bin, DeepLabV3+'s image pooling) is not: it
    comes out of `interpolate` or `expand` NCHW. The whole concatenation, and so the wide
    convolution that reads it, then left channels_last. Here only such small parts are converted.
    """
    if is_channels_last(like):
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    return torch.cat(tensors, dim=1)
