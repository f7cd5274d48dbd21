"""Region-based losses: overlap scores of softmax probabilities p and one-hot targets g.

Shared conventions (the choices the papers leave open):

- Sums: with `per_image=False` (default, "batch" Dice) TP = sum p*g, sum p, sum g run over all
  non-ignored pixels of the batch per class; with `per_image=True` per image and class, then
  averaged over the classes of each image, then over images.
- Smoothing: `smooth` (default 1) is added to numerator and denominator, so a class with no
  ground truth and no predicted mass scores a perfect 0 loss, and nothing divides by zero.
- Absent classes: `classes="present"` (default) averages over the classes that occur in the
  target (batch or image); `"all"` averages over every class (absent classes then penalise any
  predicted mass). An all-ignored batch counts no class and returns 0.
- Reduction: (weighted) mean over counted classes; `weight` gives per-class weights of that mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segsuite.losses.base import SegLoss, check_class_mode, safe_div, safe_pow


class RegionLoss(SegLoss):
    """Base of the overlap losses; subclasses implement `class_losses(tp, psum, gsum) -> loss_c`.

    Args:
        smooth: added to numerator and denominator of each class ratio.
        per_image: sums per image (True) or over the whole batch (False).
        classes: "present" (classes in the target) or "all".
        weight: optional per-class weights of the mean over classes.
        ignore_index: label that contributes nothing.
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = False, classes: str = "present",
                 weight: Sequence[float] | None = None, ignore_index: int = 255) -> None:
        super().__init__(ignore_index, weight)
        if smooth < 0:
            raise ValueError(f"{type(self).__name__}: smooth={smooth}; expected >= 0")
        self.smooth = float(smooth)
        self.per_image = bool(per_image)
        self.classes = check_class_mode(classes, type(self).__name__)

    def stats(self, probs: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(TP, sum p, sum g) per class: [C] over the batch or [N,C] per image."""
        dims = (2, 3) if self.per_image else (0, 2, 3)
        return (probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)

    def ratio(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        """(num + smooth) / (den + smooth), 1 (perfect) where both are 0."""
        return safe_div(num + self.smooth, den + self.smooth, empty=1.0)

    def class_losses(self, tp: torch.Tensor, psum: torch.Tensor, gsum: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        probs, onehot, _ = self.probs_onehot(logits, target)
        tp, psum, gsum = self.stats(probs, onehot)
        return self.class_mean(self.class_losses(tp, psum, gsum), gsum > 0, self.classes)


class DiceLoss(RegionLoss):
    """Soft Dice loss (Milletari et al. 2016, linear denominator as in Sudre et al. 2017):
    1 - (2 TP + s) / (sum p + sum g + s) per class, averaged as described in `RegionLoss`."""

    def class_losses(self, tp, psum, gsum):
        return 1.0 - self.ratio(2.0 * tp, psum + gsum)


class IoULoss(RegionLoss):
    """Soft Jaccard loss (Rahman & Wang 2016): 1 - (TP + s) / (sum p + sum g - TP + s) per class."""

    def class_losses(self, tp, psum, gsum):
        return 1.0 - self.ratio(tp, psum + gsum - tp)


class TverskyLoss(RegionLoss):
    """Tversky loss (Salehi et al. 2017): 1 - (TP + s) / (TP + alpha FP + beta FN + s) per class,
    FP = sum p(1-g), FN = sum (1-p)g. alpha = beta = 0.5 is Dice; the paper's best: 0.3 / 0.7.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives.
        (others as in `RegionLoss`)
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def tversky_index(self, tp, psum, gsum):
        return self.ratio(tp, tp + self.alpha * (psum - tp) + self.beta * (gsum - tp))

    def class_losses(self, tp, psum, gsum):
        return 1.0 - self.tversky_index(tp, psum, gsum)


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019): (1 - TI_c)^(1/gamma) per class, averaged as in
    `RegionLoss` (the paper sums over classes; a mean keeps the scale independent of C).

    Args:
        gamma: focal parameter; the exponent is 1/gamma (paper: gamma = 4/3, i.e. 0.75).
        alpha, beta: Tversky weights of FP and FN (paper: 0.3 and 0.7).
        (others as in `RegionLoss`)
    """

    def __init__(self, gamma: float = 4.0 / 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gamma <= 0:
            raise ValueError(f"FocalTverskyLoss: gamma={gamma}; expected > 0")
        self.gamma = float(gamma)

    def class_losses(self, tp, psum, gsum):
        # safe_pow keeps the gradient of x^(1/gamma) finite at a perfect class (x = 0)
        return safe_pow(1.0 - self.tversky_index(tp, psum, gsum), 1.0 / self.gamma)


class GeneralizedDiceLoss(RegionLoss):
    """Generalised Dice loss (Sudre et al. 2017):
    1 - (2 sum_c w_c TP_c + s) / (sum_c w_c (sum p_c + sum g_c) + s), w_c = 1 / (sum g_c)^2.

    One ratio over all classes (not a mean of per-class ratios). The weights are normalised to
    sum to 1 (the ratio is invariant to their scale; normalising keeps `smooth` meaningful).
    Absent classes have infinite w_c in the paper: `classes="present"` gives them weight 0,
    `"all"` the largest weight of the present classes (so predicted mass there is penalised).
    `weight` multiplies w_c. Per image: one ratio per image, mean over images with labels.
    """

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        probs, onehot, _ = self.probs_onehot(logits, target)
        tp, psum, gsum = self.stats(probs, onehot)
        present = gsum > 0
        w = torch.where(present, 1.0 / torch.where(present, gsum, torch.ones_like(gsum)).square(),
                        torch.zeros_like(gsum))
        if self.classes == "all":
            w = torch.where(present, w, w.amax(dim=-1, keepdim=True))
        if self.weight is not None:
            w = w * self.weight
        w = safe_div(w, w.sum(-1, keepdim=True))
        loss = 1.0 - self.ratio(2.0 * (w * tp).sum(-1), (w * (psum + gsum)).sum(-1))
        if not self.per_image:
            return loss
        has_labels = present.any(-1).float()
        return safe_div((loss * has_labels).sum(), has_labels.sum())


class LovaszSoftmaxLoss(RegionLoss):
    """Lovász-Softmax loss (Berman et al. 2018): the Lovász extension of the Jaccard loss of each
    class applied to the pixel errors |g - p_c|, averaged over classes as in `RegionLoss`.

    Sorting is done on all pixels at once ([classes, pixels], or [images*classes, pixels] with
    `per_image`); ignored pixels are sorted last with zero error and do not enter the cumulative
    union, so they change neither value nor gradient. No smoothing term (the extension is exact).

    Args:
        classes: "present" (paper default) or "all".
        per_image: one extension per image (True) or over the whole batch (False, paper default).
        weight: optional per-class weights of the mean over classes.
        ignore_index: label that contributes nothing.
    """

    def __init__(self, classes: str = "present", per_image: bool = False,
                 weight: Sequence[float] | None = None, ignore_index: int = 255) -> None:
        super().__init__(smooth=0.0, per_image=per_image, classes=classes, weight=weight, ignore_index=ignore_index)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        probs, onehot, valid = self.probs_onehot(logits, target)
        n, c = probs.shape[:2]
        if self.per_image:  # [N, C, P]
            probs, onehot, valid = probs.flatten(2), onehot.flatten(2), valid.flatten(2).expand(n, c, -1)
        else:  # [1, C, N*P]
            probs = probs.transpose(0, 1).reshape(1, c, -1)
            onehot = onehot.transpose(0, 1).reshape(1, c, -1)
            valid = valid.transpose(0, 1).reshape(1, 1, -1).expand(1, c, -1)
        errors = (onehot - probs).abs()  # 0 at ignored pixels
        key = torch.where(valid, errors.detach(), torch.full_like(errors, -1.0))
        order = key.argsort(dim=-1, descending=True)
        errors_sorted = errors.gather(-1, order)
        fg = onehot.gather(-1, order)
        bg = (1.0 - fg) * valid.gather(-1, order).float()
        gts = fg.sum(-1, keepdim=True)
        intersection = gts - fg.cumsum(-1)
        union = (gts + bg.cumsum(-1)).clamp_min(1.0)
        jaccard = 1.0 - intersection / union
        grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
        class_losses = (errors_sorted * grad).sum(-1)  # [1 or N, C]
        if not self.per_image:
            class_losses, gts = class_losses[0], gts[0]
        return self.class_mean(class_losses, gts.squeeze(-1) > 0, self.classes)
