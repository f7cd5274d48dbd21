"""Compound losses: a distribution term and a region term in one objective.

Conventions as in `distribution` (pixel means over non-ignored pixels of the batch) and `region`
(smoothing, `per_image`, `classes`, weighted mean over classes) for their respective parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from segsuite.losses.base import SegLoss, safe_div, safe_pow
from segsuite.losses.distribution import CrossEntropyLoss
from segsuite.losses.region import DiceLoss, RegionLoss


def log1mexp(logp: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(logp)) computed stably (Mächler 2012), finite for logp < 0."""
    x = logp.clamp_max(-1e-7)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class CEDiceLoss(SegLoss):
    """ce_weight * CrossEntropyLoss + dice_weight * DiceLoss (both with the same class weights).

    Args:
        ce_weight: weight of the cross-entropy term.
        dice_weight: weight of the Dice term.
        weight: optional per-class weights passed to both terms (or `auto` in config).
        label_smoothing: of the cross-entropy term.
        smooth, per_image, classes: of the Dice term (see `RegionLoss`).
        ignore_index: label that contributes nothing.
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, weight: Sequence[float] | None = None,
                 label_smoothing: float = 0.0, smooth: float = 1.0, per_image: bool = False,
                 classes: str = "present", ignore_index: int = 255) -> None:
        super().__init__(ignore_index, weight)
        self.ce_weight, self.dice_weight = float(ce_weight), float(dice_weight)
        self.ce = CrossEntropyLoss(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
        self.dice = DiceLoss(smooth=smooth, per_image=per_image, classes=classes, weight=weight,
                             ignore_index=ignore_index)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        return self.ce_weight * self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


class ComboLoss(RegionLoss):
    """Combo loss (Taghanaki et al. 2019): alpha * L_wbce + (1 - alpha) * (1 - Dice).

    L_wbce = -mean over non-ignored pixels and classes (one-vs-rest on the softmax) of
    beta g ln p + (1 - beta)(1 - g) ln(1 - p); beta > 0.5 penalises false negatives more.
    The paper subtracts Dice itself; 1 - Dice differs by the constant (1 - alpha) and makes a
    perfect prediction score 0. Dice term as `DiceLoss`; `weight` weighs the classes of both terms.

    Args:
        alpha: weight of the cross-entropy term (paper: 0.5).
        beta: weight of the positive part of the cross-entropy (paper: 0.5 .. 0.7).
        (smooth, per_image, classes, weight, ignore_index as in `RegionLoss`)
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0):
            raise ValueError(f"ComboLoss: alpha={alpha}, beta={beta}; both must lie in [0, 1]")
        self.alpha, self.beta = float(alpha), float(beta)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        probs, onehot, valid = self.probs_onehot(logits, target)
        logp = logits.log_softmax(dim=1)
        bce = -(self.beta * onehot * logp + (1.0 - self.beta) * (1.0 - onehot) * log1mexp(logp))
        bce = torch.where(valid, bce, torch.zeros((), device=logits.device))
        per_class = safe_div(bce.sum(dim=(0, 2, 3)), valid.sum().float())
        bce_term = self.class_mean(per_class, per_class > 0, "all")
        tp, psum, gsum = self.stats(probs, onehot)
        dice_term = self.class_mean(1.0 - self.ratio(2.0 * tp, psum + gsum), gsum > 0, self.classes)
        return self.alpha * bce_term + (1.0 - self.alpha) * dice_term


class ExpLogLoss(RegionLoss):
    """Exponential logarithmic loss (Wong et al. 2018): w_dice * L_dice + w_cross * L_cross.

    L_dice = mean over classes (as in `RegionLoss`) of (-ln Dice_c)^gamma_dice;
    L_cross = sum_x w_y (-ln p_y)^gamma_cross / sum_x w_y over non-ignored pixels. The paper's
    w_l = ((sum_k f_k) / f_l)^0.5 are class weights of the cross term only: pass them as `weight`
    (uniform if None). x^0.3 is linearised below 1e-6 so its gradient stays finite at x = 0.

    Args:
        w_dice, w_cross: term weights (paper: 0.8, 0.2).
        gamma_dice, gamma_cross: exponents (paper: 0.3, 0.3).
        weight: per-class w_l of the cross term (or `auto` in config).
        (smooth, per_image, classes, ignore_index as in `RegionLoss`)
    """

    def __init__(self, w_dice: float = 0.8, w_cross: float = 0.2, gamma_dice: float = 0.3, gamma_cross: float = 0.3,
                 weight: Sequence[float] | None = None, smooth: float = 1.0, per_image: bool = False,
                 classes: str = "present", ignore_index: int = 255) -> None:
        super().__init__(smooth=smooth, per_image=per_image, classes=classes, weight=None, ignore_index=ignore_index)
        self.register_buffer("cross_weight", self._weight_tensor(weight), persistent=False)
        self.w_dice, self.w_cross = float(w_dice), float(w_cross)
        self.gamma_dice, self.gamma_cross = float(gamma_dice), float(gamma_cross)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        if self.cross_weight is not None and self.cross_weight.numel() != logits.shape[1]:
            raise ValueError(f"ExpLogLoss: weight has {self.cross_weight.numel()} entries "
                             f"for {logits.shape[1]} classes")
        probs, onehot, _ = self.probs_onehot(logits, target)
        tp, psum, gsum = self.stats(probs, onehot)
        dice = self.ratio(2.0 * tp, psum + gsum)
        dice_term = self.class_mean(safe_pow(-dice.log(), self.gamma_dice), gsum > 0, self.classes)
        valid, labels = self.valid_and_labels(target)
        nll = -logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        w_y = valid.float() if self.cross_weight is None else torch.where(valid, self.cross_weight[labels], 0.0)
        cross = torch.where(valid, safe_pow(nll, self.gamma_cross) * w_y, torch.zeros((), device=logits.device))
        return self.w_dice * dice_term + self.w_cross * safe_div(cross.sum(), w_y.sum())


class SumLoss(nn.Module):
    """Weighted sum of any losses, e.g. DistancePenalizedCELoss + DiceLoss. Forwards the terms'
    `target_fn` (merged extras) and `set_progress`.

    Args:
        terms: the loss modules.
        weights: one weight per term (default 1 each).
    """

    def __init__(self, terms: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.weights = [1.0] * len(self.terms) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.terms):
            raise ValueError(f"SumLoss: {len(self.weights)} weights for {len(self.terms)} terms")

    def target_fn(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for term in self.terms:
            if hasattr(term, "target_fn"):
                out.update(term.target_fn(mask))
        return out

    def set_progress(self, step: int, max_steps: int) -> None:
        for term in self.terms:
            if hasattr(term, "set_progress"):
                term.set_progress(step, max_steps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **extras: Any) -> torch.Tensor:
        return sum(w * term(logits, target, **extras) for w, term in zip(self.weights, self.terms))
