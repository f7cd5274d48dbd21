"""Distribution-based losses (per-pixel likelihood terms)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy, mean over non-ignored pixels (weighted mean with class weights).

    Args:
        weight: optional per-class weights (length C).
        ignore_index: label that contributes nothing.
        label_smoothing: as in `torch.nn.functional.cross_entropy`.
    """

    def __init__(
        self,
        weight: Sequence[float] | None = None,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits, target, weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
