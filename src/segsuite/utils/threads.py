"""CPU thread count for torch, from the `torch_threads` config key."""

from __future__ import annotations

import torch


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
