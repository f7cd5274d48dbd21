"""Process-wide compute settings from the config: the CPU thread count (`torch_threads`), the
float32 matmul precision (`float32_matmul_precision`) and glibc's allocator thresholds
(`malloc_tuning`)."""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20   # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20


def set_malloc_tuning(enabled: bool | None) -> bool:
    """With True, let glibc's heap reuse freed tensors of up to 32 MiB (`mallopt` M_MMAP_THRESHOLD
    at its maximum, M_TRIM_THRESHOLD 256 MiB); False or None keep glibc's defaults. Returns
    whether the settings were applied (only glibc, i.e. Linux, has them).

    By default glibc serves allocations above an adaptive threshold with fresh `mmap`s and hands
    trimmed heap back to the kernel, so a CPU training step that allocates the same activation
    tensors every step takes page faults through all of them again. Setting both thresholds
    (either alone does not help) keeps those pages: the default run's bf16 U-Net step on the
    2-core development machine went from 52-57 to 68-70 images/s. The cost is up to 256 MiB of
    freed memory a process may keep instead of returning it. Dataloader workers forked afterwards
    inherit the settings.
    """
    if enabled is None or enabled is False:
        return False
    if enabled is not True:
        raise ValueError(f"malloc_tuning={enabled!r}: expected true, false or null")
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def apply_runtime_settings(cfg: Mapping[str, Any]) -> None:
    """Apply an entry point's `torch_threads`, `float32_matmul_precision` and `malloc_tuning`."""
    set_torch_threads(cfg.get("torch_threads"))
    set_matmul_precision(cfg.get("float32_matmul_precision"))
    set_malloc_tuning(cfg.get("malloc_tuning"))
