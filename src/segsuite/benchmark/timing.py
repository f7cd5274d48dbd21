"""Measurement primitives: best-of timings, CPU-time rates, peak memory, FLOP counts."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], warmup: int, iters: int, device: torch.device) -> float:
    """Seconds of the fastest of `iters` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = math.inf
    for _ in range(max(iters, 1)):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def autocast(precision: str, device: torch.device):
    """`torch.autocast` for "bf16" (mixed), a no-op context for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of `fn()` by `torch.utils.flop_counter` (a multiply-add counts as 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def rate_per_image(fn: Callable[[int], Any], count: int, min_seconds: float, images_per_call: int = 1) -> float:
    """Images per CPU-second of this (single-threaded) process calling `fn(i)` round-robin for at
    least `min_seconds` of CPU time, after one warm-up call. CPU time, not wall time: it is what one
    worker spends per image, and it barely moves when other jobs share the cores."""
    fn(0)
    start, n = time.process_time(), 0
    while n < 2 * count or time.process_time() - start < min_seconds:
        fn(n % count)
        n += 1
    return n * images_per_call / (time.process_time() - start)


def best_interleaved_rates(fns: dict[str, tuple[Callable[[int], Any], int]], count: int, seconds: float,
                           rounds: int) -> dict[str, float]:
    """`rate_per_image` of every `(fn, images_per_call)`, taken in `rounds` alternating rounds of
    `seconds / rounds` each; the best round of each. Ratios between them then compare runs made
    under the same conditions, not a quiet minute against a busy one."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, (fn, images_per_call) in fns.items():
            best[name] = max(best[name], rate_per_image(fn, count, seconds / rounds, images_per_call))
    return best


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`), so the RSS baseline is what is in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yields a dict that holds `peak_mib` and `method` after the block."""
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        result.update(peak_mib=(torch.cuda.max_memory_allocated(device) - base) / 2**20,
                      method="cuda max_memory_allocated")
        return
    release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _proc_status_kib("VmRSS")
        yield result
        result.update(peak_mib=(_proc_status_kib("VmHWM") - base) / 1024, method="VmHWM - VmRSS (clear_refs)")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield result
        result.update(peak_mib=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                      method="getrusage maxrss delta (lower bound)")
