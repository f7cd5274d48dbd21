"""Segmentation losses. Contract: `loss(logits [N,C,H,W], target [N,H,W], **extras) -> scalar`.

Losses that need ground-truth distance maps define `target_fn(mask) -> dict` (run in the
dataloader workers; the batch then carries the maps as extras); losses whose weight follows
training progress define `set_progress(step, max_steps)`. See docs/losses.md.
"""

from segsuite.losses.boundary import BoundaryLoss, HausdorffDTLoss
from segsuite.losses.compound import CEDiceLoss, ComboLoss, ExpLogLoss, SumLoss
from segsuite.losses.distribution import CrossEntropyLoss, DistancePenalizedCELoss, FocalLoss
from segsuite.losses.region import (
    DiceLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    IoULoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
)

__all__ = [
    "BoundaryLoss", "CEDiceLoss", "ComboLoss", "CrossEntropyLoss", "DiceLoss", "DistancePenalizedCELoss",
    "ExpLogLoss", "FocalLoss", "FocalTverskyLoss", "GeneralizedDiceLoss", "HausdorffDTLoss", "IoULoss",
    "LovaszSoftmaxLoss", "SumLoss", "TverskyLoss",
]
