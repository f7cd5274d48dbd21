"""Distribution-based losses: per-pixel likelihood terms averaged over non-ignored pixels.

Shared conventions: the value is a mean over non-ignored pixels of the batch (pixels of all
images pooled); with class weights it is the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}
(PyTorch's convention), so uniform weights equal no weights. All-ignored batches give 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from segsuite.losses.base import SegLoss, safe_div
from segsuite.losses.distance import boundary_distance, label_change_distance


def cross_entropy_terms(
    logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
    weight: torch.Tensor | None, label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel (weighted, smoothed) CE [N,H,W] (0 where ignored) and per-pixel normaliser w_y.

    l_i = (1-eps) w_y (-log p_y) + eps/C sum_c w_c (-log p_c), normalised by sum_i w_{y_i}
    (identical to `torch.nn.functional.cross_entropy` with weight/label_smoothing/ignore_index).
    """
    logp = logits.log_softmax(dim=1)
    nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1)
    w_y = torch.ones_like(nll) if weight is None else weight[labels]
    loss = w_y * nll
    if label_smoothing > 0:
        per_class = -logp if weight is None else -logp * weight.view(1, -1, 1, 1)
        loss = (1 - label_smoothing) * loss + label_smoothing * per_class.mean(dim=1)
    zero = torch.zeros((), device=logits.device)
    return torch.where(valid, loss, zero), torch.where(valid, w_y, zero)


class CrossEntropyLoss(SegLoss):
    """Pixel-wise cross-entropy (weighted mean over non-ignored pixels of the batch).

    Args:
        weight: optional per-class weights (weighted mean: sum w_y l / sum w_y), or `auto` in config.
        ignore_index: label that contributes nothing.
        label_smoothing: eps of the smoothed target (1-eps) onehot + eps/C, as in PyTorch.
    """

    def __init__(self, weight: Sequence[float] | None = None, ignore_index: int = 255,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(ignore_index, weight)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing={label_smoothing}; expected 0 <= eps < 1")
        self.label_smoothing = float(label_smoothing)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        valid, labels = self.valid_and_labels(target)
        loss, norm = cross_entropy_terms(logits, labels, valid, self.weight, self.label_smoothing)
        return safe_div(loss.sum(), norm.sum())


class FocalLoss(SegLoss):
    """Softmax focal loss (Lin et al. 2017): FL = -alpha_y (1 - p_y)^gamma log p_y.

    The per-class alpha of the paper is `weight`; the value is the alpha-weighted mean over
    non-ignored pixels of the batch, sum alpha_y FL / sum alpha_y (the paper normalises by the
    number of positives instead; a constant alpha then changes nothing, as it would only rescale
    the learning rate). gamma=0 without weights is cross-entropy.

    Args:
        gamma: focusing parameter (paper: 2).
        weight: optional per-class alpha_c (or `auto` in config).
        ignore_index: label that contributes nothing.
    """

    def __init__(self, gamma: float = 2.0, weight: Sequence[float] | None = None, ignore_index: int = 255) -> None:
        super().__init__(ignore_index, weight)
        if gamma < 0:
            raise ValueError(f"FocalLoss: gamma={gamma}; expected >= 0")
        self.gamma = float(gamma)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        valid, labels = self.valid_and_labels(target)
        logp_y = logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        focus = (1.0 - logp_y.exp()).clamp_min(1e-12).pow(self.gamma) if self.gamma > 0 else 1.0
        w_y = self.class_weights_for(labels, valid)
        loss = torch.where(valid, -focus * logp_y * w_y, torch.zeros((), device=logits.device))
        return safe_div(loss.sum(), w_y.sum())


class DistancePenalizedCELoss(SegLoss):
    """Distance-map penalised cross-entropy (Caliva et al. 2019): CE weighted per pixel by 1 + D.

    D is the inverted, normalised distance to the nearest ground-truth boundary of the image,
    D = scale * (1 - d / max(d)), so pixels on a label change weigh 1 + scale and the farthest
    pixel of the crop weighs 1. One distance transform per image (all classes share the label-change
    map), computed in the dataloader workers through `target_fn` (key `dpce_penalty`), or on the
    device by the exact torch transform when the batch does not carry it. Value: sum w_y (1+D) CE / sum w_y over
    non-ignored pixels of the batch (the penalty re-weights pixels, it does not renormalise).

    Args:
        penalty_scale: multiplier of D (1: boundaries weigh twice the farthest pixel).
        weight: optional per-class weights (or `auto` in config).
        ignore_index: label that contributes nothing.
        label_smoothing: as in `CrossEntropyLoss`.
    """

    extra_key = "dpce_penalty"

    def __init__(self, penalty_scale: float = 1.0, weight: Sequence[float] | None = None,
                 ignore_index: int = 255, label_smoothing: float = 0.0) -> None:
        super().__init__(ignore_index, weight)
        self.penalty_scale = float(penalty_scale)
        self.label_smoothing = float(label_smoothing)

    def target_fn(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """`{"dpce_penalty": D/scale [H,W] float16}` for one (augmented) mask."""
        d = boundary_distance(mask)
        top = float(d.max())
        penalty = 1.0 - d / top if top > 0 else np.zeros_like(d)
        return {self.extra_key: penalty.astype(np.float16)}

    def penalty(self, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        if self.extra_key in extras:
            return extras[self.extra_key].to(target.device, torch.float32)
        d = label_change_distance(target)  # fallback: same map, computed on the device
        top = d.amax(dim=(1, 2), keepdim=True)
        return torch.where(top > 0, 1.0 - d / torch.where(top > 0, top, torch.ones_like(top)), torch.zeros_like(d))

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        valid, labels = self.valid_and_labels(target)
        loss, norm = cross_entropy_terms(logits, labels, valid, self.weight, self.label_smoothing)
        pixel_weight = 1.0 + self.penalty_scale * self.penalty(target, extras)
        return safe_div((loss * pixel_weight).sum(), norm.sum())
