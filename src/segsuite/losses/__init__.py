"""Segmentation losses. Contract: `loss(logits [N,C,H,W], target [N,H,W]) -> scalar`."""

from segsuite.losses.distribution import CrossEntropyLoss

__all__ = ["CrossEntropyLoss"]
