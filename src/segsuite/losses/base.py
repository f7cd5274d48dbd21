"""What every segsuite loss shares: the call contract, float32 compute, ignore handling, reductions.

Conventions used by the whole family (stated once here, repeated in each docstring):

- Ignored pixels (`target == ignore_index`) are removed with `torch.where`, never by a
  data-dependent index, so they contribute to neither the value nor any gradient and the forward
  pass needs no host-device synchronisation.
- Every ratio is a `sum / count` with an empty count mapped to 0 (not NaN); an all-ignored batch
  returns `0` that is still attached to the graph.
- Class weights (`weight`) always enter as a *weighted mean*, so uniform weights equal no weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

CLASS_MODES = ("present", "all")


def safe_div(num: torch.Tensor, den: torch.Tensor, empty: float = 0.0) -> torch.Tensor:
    """`num / den` where `den > 0`, else `empty` (no NaN, no sync, gradient kept through `num`)."""
    positive = den > 0
    ratio = num / torch.where(positive, den, torch.ones_like(den))
    return torch.where(positive, ratio, ratio * 0.0 + empty)


def check_class_mode(classes: str, owner: str) -> str:
    if classes not in CLASS_MODES:
        raise ValueError(f"{owner}: classes={classes!r}; expected one of {CLASS_MODES}")
    return classes


class SegLoss(nn.Module):
    """Base class: validates the call, disables autocast, casts logits to float32.

    Subclasses implement `compute(logits float32 [N,C,H,W], target int64 [N,H,W], extras)`.

    Args:
        ignore_index: label that contributes nothing.
        weight: optional per-class weights (length C); `None` means uniform.
    """

    #: the loss is 0 at a confident perfect prediction (its minimum); False where it goes below 0
    zero_at_perfect: bool = True

    def __init__(self, ignore_index: int = 255, weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.register_buffer("weight", self._weight_tensor(weight), persistent=False)

    def _weight_tensor(self, weight: Any) -> torch.Tensor | None:
        if weight is None:
            return None
        if isinstance(weight, str):
            raise ValueError(  # noqa: TRY004 - a config value ("auto") left unresolved
                f"{type(self).__name__}: weight={weight!r} is not a list of per-class weights. "
                "`weight: auto` must be resolved before the loss is built "
                "(segsuite.losses.class_weights.resolve_auto_weights, which train.py calls); "
                "or pass an explicit list, e.g. loss.weight=[1.0,2.0,...]."
            )
        tensor = torch.as_tensor(list(weight), dtype=torch.float32)
        if tensor.ndim != 1 or not torch.isfinite(tensor).all() or (tensor < 0).any():
            raise ValueError(f"{type(self).__name__}: weight must be a list of finite non-negative floats, "
                             f"got {weight}")
        return tensor

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **extras: Any) -> torch.Tensor:
        if (logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]
                or logits.shape[2:] != target.shape[1:]):
            raise ValueError(
                f"{type(self).__name__}: expected logits [N,C,H,W] and target [N,H,W] of the same N,H,W; "
                f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
            )
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: weight has {self.weight.numel()} entries but the logits have "
                f"{logits.shape[1]} classes; set class_weights (or the loss's weight) to a list of "
                f"{logits.shape[1]} values (or auto)"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), target.long(), extras)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    # -- helpers shared by subclasses --------------------------------------------------------------
    def valid_and_labels(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid bool [N,H,W], target with ignored pixels set to class 0)."""
        valid = target != self.ignore_index
        return valid, torch.where(valid, target, torch.zeros_like(target))

    def class_weights_for(self, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-pixel weight w_y of the true class (1 without class weights), 0 at ignored pixels."""
        if self.weight is None:
            return valid.float()
        return torch.where(valid, self.weight[labels], torch.zeros((), device=labels.device))

    def probs_onehot(self, logits: torch.Tensor,
                     target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(softmax probs, one-hot target, valid [N,1,H,W]); probs and one-hot are 0 at ignored pixels."""
        valid, labels = self.valid_and_labels(target)
        valid4 = valid.unsqueeze(1)
        probs = torch.where(valid4, logits.softmax(dim=1), torch.zeros((), device=logits.device))
        classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
        onehot = ((labels.unsqueeze(1) == classes) & valid4).float()  # contiguous NCHW
        return probs, onehot, valid4

    def class_mean(self, values: torch.Tensor, present: torch.Tensor, classes: str) -> torch.Tensor:
        """Weighted mean of per-class `values` ([C] or per-image [N,C]) over the counted classes.

        `classes="present"` counts a class only where it occurs in the target (in the batch, or in
        the image for [N,C]); "all" counts every class. Per-image values are averaged over the
        classes of each image first, then over the images that count at least one class.
        """
        counted = present.float() if classes == "present" else torch.ones_like(values)
        w = counted if self.weight is None else counted * self.weight
        per_row = safe_div((values * w).sum(-1), w.sum(-1))
        if values.ndim == 1:
            return per_row
        has_class = (w.sum(-1) > 0).float()
        return safe_div((per_row * has_class).sum(), has_class.sum())


def safe_pow(x: torch.Tensor, exponent: float, eps: float = 1e-6) -> torch.Tensor:
    """x^exponent for x >= 0 with a finite gradient at 0 when exponent < 1: below `eps` the power
    is replaced by the line through 0 and (eps, eps^exponent), so the value still reaches 0."""
    x = x.clamp_min(0.0)
    if exponent >= 1.0:
        return x.pow(exponent)
    return torch.where(x > eps, x.clamp_min(eps).pow(exponent), x * eps ** (exponent - 1.0))
