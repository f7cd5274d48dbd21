"""Section `peak`: the machine's peak GEMM FLOP/s, the denominator of every "% of peak"."""

from __future__ import annotations

from typing import Any

import torch

from segsuite.benchmark.timing import best_time


def conv1x1_operands(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, weight) of a 1x1 convolution that computes `a @ b` ([M, K] x [K, N]): N pixels,
    K -> M channels; the input in channels_last, the shipped memory format.

    The same 2*M*K*N FLOPs as `a @ b`, but through the convolution library (oneDNN on CPUs,
    cuDNN on GPUs) instead of BLAS."""
    m, k = a.shape
    return b.reshape(1, k, b.shape[1], 1).contiguous(memory_format=torch.channels_last), a.reshape(m, k, 1, 1)


def peak_matmul(device: torch.device, size: int, iters: int) -> dict[str, Any]:
    """Peak GFLOP/s of a `size`^3 matrix product (2 size^3 FLOPs) in fp32 and bf16.

    Timed through both GEMM paths a model's layers take: `a @ b` (BLAS: MKL on x86 CPUs, cuBLAS
    on GPUs) and the same product as a 1x1 convolution (`conv1x1_operands`). The peak is the
    faster of the two; both are kept under "paths". They can differ by 2x: on the AMD
    development CPU MKL's fp32 GEMM (no AVX-512 code path there) reaches half of what oneDNN's
    convolutions do, so a peak from `a @ b` alone put convolution-heavy models above 100%.
    """
    paths: dict[str, dict[str, float]] = {"matmul": {}, "conv1x1": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        x, w = conv1x1_operands(a, b)  # laid out once, outside the timing
        for path, run in (("matmul", lambda a=a, b=b: a @ b),
                          ("conv1x1", lambda x=x, w=w: torch.nn.functional.conv2d(x, w))):
            paths[path][name] = 2 * size**3 / best_time(run, 1, iters, device) / 1e9
    return {name: max(p[name] for p in paths.values()) for name in ("fp32", "bf16")} | {"paths": paths}


def measure(args, device: torch.device) -> dict[str, Any]:
    """The peak at `--peak-size`, best of max(`--iters`, 3), printed as it goes."""
    print("peak GEMM", flush=True)
    peak = peak_matmul(device, args.peak_size, max(args.iters, 3))
    for prec in ("fp32", "bf16"):
        print(f"  {prec} {peak[prec]:.0f} GFLOP/s (a @ b {peak['paths']['matmul'][prec]:.0f}, "
              f"1x1 conv {peak['paths']['conv1x1'][prec]:.0f})", flush=True)
    return peak


def render(results: dict[str, Any]) -> list[str]:
    """The peak line of the report."""
    if "peak" not in results:
        return []
    p = results["peak"]
    paths = p.get("paths", {})
    by_path = "; ".join(f"{prec}: `a @ b` {paths['matmul'][prec]:.0f}, "
                        f"1×1 convolution {paths['conv1x1'][prec]:.0f}"
                        for prec in ("fp32", "bf16")) if paths else ""
    return [(f"Measured peak GEMM ({results['settings']['peak_size']}³, the faster of `a @ b` "
             f"and the same product as a 1×1 convolution): "
             f"**{p['fp32']:.0f} GFLOP/s fp32**, **{p['bf16']:.0f} GFLOP/s bf16**"
             + (f" ({by_path})." if by_path else ".")), ""]
