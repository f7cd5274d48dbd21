"""OmegaConf resolvers used by the configs (registered on import of the entry points)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def fastest_precision() -> str:
    """`bf16-mixed` where the hardware runs bfloat16 natively, else `32-true`.

    CUDA: GPUs with bf16 support (Ampere and newer). CPU: AVX512-BF16 or AMX (oneDNN bf16 kernels);
    without them bf16 autocast is emulated and slower than fp32.
    """
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    cpu_bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return "bf16-mixed" if cpu_bf16 is not None and cpu_bf16() else "32-true"


def register_resolvers() -> None:
    """Register `${fastest_precision:}`, `${is_terminal:}` and `${segsuite_help:...}` (idempotent)."""
    from segsuite.callbacks.progress import is_terminal
    from segsuite.utils.help import help_section

    if not OmegaConf.has_resolver("fastest_precision"):
        OmegaConf.register_new_resolver("fastest_precision", fastest_precision)
    if not OmegaConf.has_resolver("is_terminal"):
        OmegaConf.register_new_resolver("is_terminal", is_terminal)
    if not OmegaConf.has_resolver("segsuite_help"):
        OmegaConf.register_new_resolver("segsuite_help", help_section)
