"""Process-wide torch compute settings from the config: the CPU thread count (`torch_threads`)
and the float32 matmul precision (`float32_matmul_precision`)."""

from __future__ import annotations

import torch

MATMUL_PRECISIONS = ("highest", "high", "medium")


def set_torch_threads(threads: int | None) -> None:
    """`torch.set_num_threads(threads)`; None keeps torch's default (one thread per core).

    On a CPU shared with dataloader workers or other jobs, fewer threads than cores avoid OpenMP
    threads waiting at barriers for a descheduled sibling (see the README's Benchmark section).
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"torch_threads={threads!r}: expected a positive integer, or null for torch's default")
    torch.set_num_threads(threads)


def set_matmul_precision(precision: str | None) -> None:
    """`torch.set_float32_matmul_precision(precision)`; None keeps torch's default ("highest").

    "high" lets float32 matrix products and convolutions use TF32 tensor cores on NVIDIA GPUs
    (Ampere and newer), with a 10-bit mantissa in the products and float32 accumulation; cuDNN
    convolutions already do by PyTorch's default (`torch.backends.cudnn.allow_tf32`). It changes
    nothing on CPUs, and nothing inside bf16/fp16 autocast regions.
    """
    if precision is None:
        return
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"float32_matmul_precision={precision!r}: expected one of {list(MATMUL_PRECISIONS)}, "
                         "or null for torch's default")
    torch.set_float32_matmul_precision(precision)
