"""Checking an exported model against PyTorch, on random inputs of several sizes.

Max-pooling with indices (SegNet, ENet) is the one discontinuous step: where two values of a
pooling window are equal up to rounding, onnxruntime (whose convolutions round differently) may
pick the other one, and max-unpooling then puts that value one pixel away, which changes the logits
around it by up to 0.3 (seen with random weights; a randomly initialised SegNet had such a window
on one input in six). So the ONNX check reads the runtime's pooling indices too, verifies that
wherever they differ from PyTorch's the runtime's choice is also a maximum of its window in
PyTorch's own values (within `tie_tolerance`, relative), and compares the logits with PyTorch run
on the runtime's indices, still at `tolerance`. An index that is not a maximum fails the check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


@contextlib.contextmanager
def pooling_indices_from(runtime_indices: Sequence[np.ndarray], tie_tolerance: float) -> Iterator[list[int]]:
    """Run PyTorch's max-pools with indices on the exported runtime's indices (in call order).

    Each runtime index that differs from PyTorch's must point inside the same window at a value
    within `tie_tolerance * max(1, |window max|)` of the window's maximum in PyTorch's own input to
    the pool, i.e. a near-tie that rounding may resolve either way; otherwise AssertionError. Yields
    a list that receives the number of windows resolved differently, per pool.
    """
    original = F.max_pool2d
    pending = list(runtime_indices)
    resolved: list[int] = []

    def max_pool2d(x, *args, **kwargs):
        with_indices = kwargs.get("return_indices", args[5] if len(args) > 5 else False)
        if not with_indices:
            return original(x, *args, **kwargs)
        out, own = original(x, *args, **kwargs)
        number = len(resolved) + 1
        if not pending:
            raise AssertionError(f"PyTorch ran max-pool #{number} with indices, the exported graph has only "
                                 f"{number - 1}")
        height, width = x.shape[-2:]
        theirs = torch.from_numpy(np.asarray(pending.pop(0))).to(own.device) % (height * width)
        if theirs.shape != own.shape:
            raise AssertionError(f"max-pool #{number}: the exported graph's indices have shape "
                                 f"{tuple(theirs.shape)}, PyTorch's {tuple(own.shape)}")
        differ = theirs != own
        if differ.any():
            names = ("kernel_size", "stride", "padding")
            given = dict(zip(names, args[:3]), **{k: v for k, v in kwargs.items() if k in names})
            kernel = _pair(given["kernel_size"])
            stride = _pair(given.get("stride") or kernel)
            padding = _pair(given.get("padding", 0))
            rows = torch.arange(own.shape[-2], device=own.device).view(-1, 1) * stride[0] - padding[0]
            cols = torch.arange(own.shape[-1], device=own.device).view(1, -1) * stride[1] - padding[1]
            row, col = theirs // width, theirs % width
            inside = (row >= rows) & (row < rows + kernel[0]) & (col >= cols) & (col < cols + kernel[1])
            flat = x.detach().flatten(2)
            best = flat.gather(2, own.flatten(2)).view_as(own)
            chosen = flat.gather(2, theirs.flatten(2)).view_as(own)
            gap = (best - chosen).abs()
            near_tie = inside & (gap <= tie_tolerance * best.abs().clamp_min(1.0))
            bad = differ & ~near_tie
            if bad.any():
                raise AssertionError(
                    f"max-pool #{number}: the exported model picked {int(bad.sum())} index(es) that are not a "
                    f"maximum of their window in PyTorch (largest gap {float(gap[bad].max()):.3e}, "
                    f"tie_tolerance={tie_tolerance}): the exported pooling differs, not a tie")
        resolved.append(int(differ.sum()))
        return out, theirs

    F.max_pool2d = max_pool2d
    try:
        yield resolved
        if pending:
            raise AssertionError(f"the exported graph has {len(resolved) + len(pending)} max-pools with indices, "
                                 f"PyTorch ran {len(resolved)}")
    finally:
        F.max_pool2d = original


def compare_input(net: nn.Module, runner, x: torch.Tensor, tie_tolerance: float = 1e-4) -> dict[str, Any]:
    """Exported vs PyTorch logits for one input batch `x`.

    Where the runner reports its pooling indices, PyTorch runs on them (see `pooling_indices_from`).
    Returns `max_abs_diff` (the number checked against the tolerance), `tied_windows` (max-pool
    windows the runtime resolved the other way) and `max_abs_diff_own_indices` (the difference with
    PyTorch's own indices, which such windows move).
    """
    got, indices = runner(x.numpy())
    with torch.no_grad():
        own = net(x).numpy()
        if indices is None:
            expected, tied = own, 0
        else:
            with pooling_indices_from(indices, tie_tolerance) as resolved:
                expected = net(x).numpy()
            tied = sum(resolved)
    if got.shape != expected.shape:
        raise AssertionError(f"exported model returned {got.shape} for input {tuple(x.shape)}; "
                             f"PyTorch returned {expected.shape}")
    return {"max_abs_diff": float(np.abs(got - expected).max()), "tied_windows": tied,
            "max_abs_diff_own_indices": float(np.abs(got - own).max())}


def compare(net: nn.Module, runner, sizes: Sequence[Sequence[int]],
            tie_tolerance: float = 1e-4) -> list[dict[str, Any]]:
    """`compare_input` on a random input of each `[N, H, W]` in `sizes`; each result also has `size`."""
    results = []
    generator = torch.Generator().manual_seed(1)
    for n, h, w in sizes:
        x = torch.randn(int(n), 3, int(h), int(w), generator=generator)
        results.append({"size": (int(n), int(h), int(w)), **compare_input(net, runner, x, tie_tolerance)})
    return results


def report_lines(fmt: str, results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per checked size: the largest logit difference (and near-tied pooling windows)."""
    lines = []
    for r in results:
        ties = ""
        if r["tied_windows"]:
            ties = (f" (PyTorch on the runtime's pooling indices: {r['tied_windows']} near-tied max-pool window(s) "
                    f"resolved the other way; {r['max_abs_diff_own_indices']:.3e} with PyTorch's own)")
        lines.append(f"input [N,H,W]={list(r['size'])}: max abs logit difference {fmt} vs PyTorch = "
                     f"{r['max_abs_diff']:.3e}{ties}")
    return lines
