"""Boundary-based losses: distance maps of the ground truth (and prediction) weight the probabilities.

Ground-truth maps come precomputed from the dataloader workers through each loss's `target_fn`
(see `segsuite.losses.distance`); without them the loss computes them itself from `target`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from segsuite.losses.base import SegLoss, safe_div
from segsuite.losses.distance import (
    boundary_distance,
    class_distance_maps,
    dense_from_compact,
    label_change_distance,
    mask_fields,
)

SCHEDULES = ("constant", "increase", "rebalance")


class _ClassMapsMixin:
    """GT per-class distance maps, from the batch (`<prefix>_maps`, `<prefix>_classes`) or computed."""

    map_prefix: str
    map_kind: str
    max_maps: int
    ignore_index: int

    def gt_target_fn(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        maps, ids = class_distance_maps(mask, self.map_kind, self.max_maps, self.ignore_index)
        return {f"{self.map_prefix}_maps": maps, f"{self.map_prefix}_classes": ids}

    def gt_maps(self, target: torch.Tensor, extras: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(maps float32 [N,K,H,W], class ids int64 [N,K])."""
        key_maps, key_ids = f"{self.map_prefix}_maps", f"{self.map_prefix}_classes"
        if key_maps in extras and key_ids in extras:
            return extras[key_maps].to(target.device, torch.float32), extras[key_ids].to(target.device, torch.long)
        items = [self.gt_target_fn(m) for m in target.detach().cpu().numpy()]  # fallback (synchronises)
        maps = torch.from_numpy(np.stack([it[key_maps] for it in items])).to(target.device, torch.float32)
        ids = torch.from_numpy(np.stack([it[key_ids] for it in items])).to(target.device)
        return maps, ids


class BoundaryLoss(SegLoss, _ClassMapsMixin):
    """Boundary loss (Kervadec et al. 2019); with a region loss, the paper's scheduled combination.

    Built alone (`region=None`, the default) it is exactly the paper's boundary term

        L_B = mean over (image, present class c, non-ignored pixel x) of phi_c(x) s_c(x),

    s the softmax and phi_c the signed distance map of class c in the ground truth: the distance
    to the class outside, -(distance to the outside - 1) inside (the authors' `one_hot2dist`:
    0 on the inner boundary, negative deeper inside). Classes absent from an image have no map and
    are not counted (the authors' code fills them with zeros). Distances are in pixels of the crop.
    L_B is negative at a perfect prediction (its minimum), so the paper trains it together with a
    region loss, and only then does the schedule apply:

        loss = w_R(t) * region + w_B(t) * L_B,  t = step / max_steps (from `set_progress`)

    `schedule`: "constant" (w_R = 1, w_B = start), "increase" (w_R = 1, w_B ramps start->end),
    "rebalance" (paper: w_B ramps start->end and w_R = 1 - w_B; the paper steps alpha = w_R from
    1 down by 0.01 per epoch). The ramp is linear over the first `ramp_fraction` of training.
    Without a region loss `schedule`, `start`, `end` and `ramp_fraction` are unused (w_B = 1).
    `conf/loss/boundary.yaml` is the paper's recipe: Generalised Dice region, "rebalance".

    Args:
        region: the region loss module (paper: GeneralizedDiceLoss), or None for L_B alone.
        schedule: "constant", "increase" or "rebalance" (only with a region loss).
        start: boundary weight at the start (only with a region loss).
        end: boundary weight at the end of the ramp (only with a region loss).
        ramp_fraction: fraction of training over which the weight ramps (only with a region loss).
        max_maps: at most this many classes per image get a map (largest kept; others count as absent).
        ignore_index: label that contributes nothing.
    """

    map_prefix = "boundary"
    zero_at_perfect = False  # L_B is negative at a perfect prediction (its minimum)
    map_kind = "signed"

    def __init__(self, region: nn.Module | None = None, schedule: str = "rebalance", start: float = 0.01,
                 end: float = 0.99, ramp_fraction: float = 0.5, max_maps: int = 16, ignore_index: int = 255) -> None:
        super().__init__(ignore_index)
        if schedule not in SCHEDULES:
            raise ValueError(f"BoundaryLoss: schedule={schedule!r}; expected one of {SCHEDULES}")
        if not 0 < ramp_fraction <= 1:
            raise ValueError(f"BoundaryLoss: ramp_fraction={ramp_fraction}; expected 0 < f <= 1")
        self.region = region
        self.schedule = schedule
        self.start, self.end, self.ramp_fraction = float(start), float(end), float(ramp_fraction)
        self.max_maps = int(max_maps)
        self.progress = 0.0

    def target_fn(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """`boundary_maps` [K,H,W] float16 signed maps and `boundary_classes` [K] int64 (plus the
        region loss's extras, if it has any)."""
        out = dict(self.region.target_fn(mask)) if hasattr(self.region, "target_fn") else {}
        out.update(self.gt_target_fn(mask))
        return out

    def set_progress(self, step: int, max_steps: int) -> None:
        """Called by the training module before each step."""
        self.progress = min(max(step / max(max_steps, 1), 0.0), 1.0)
        if self.region is not None and hasattr(self.region, "set_progress"):
            self.region.set_progress(step, max_steps)

    def weights(self) -> tuple[float, float]:
        """(region weight, boundary weight) at the current progress; (0, 1) without a region loss."""
        if self.region is None:
            return 0.0, 1.0
        if self.schedule == "constant":
            return 1.0, self.start
        ramp = min(self.progress / self.ramp_fraction, 1.0)
        w_b = self.start + (self.end - self.start) * ramp
        return (1.0 - w_b if self.schedule == "rebalance" else 1.0), w_b

    def boundary_term(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        maps, ids = self.gt_maps(target, extras)
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.softmax(dim=1)
        # scatter the maps to [N,C,H,W] (no autograd) so the product's backward is elementwise;
        # classes without a map are 0 there, so only ignored pixels need masking
        phi = dense_from_compact(maps, ids, logits.shape[1])
        contrib = torch.where(valid, phi * probs, torch.zeros((), device=logits.device))
        count = ((ids >= 0).sum(1) * valid.sum(dim=(1, 2, 3))).sum()
        return safe_div(contrib.sum(), count.float())

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        if self.region is None:
            return self.boundary_term(logits, target, extras)
        w_region, w_boundary = self.weights()
        loss = w_boundary * self.boundary_term(logits, target, extras)
        if w_region > 0:
            loss = loss + w_region * self.region(logits, target, **extras)
        return loss


FIELDS = ("per_class", "shared")


class HausdorffDTLoss(SegLoss, _ClassMapsMixin):
    """Distance-transform Hausdorff loss (Karimi & Salcudean 2019), one-vs-rest for each class:

        L = mean over non-ignored pixels x and classes c of (g_c - p_c)^2 (d_G,c(x)^alpha + d_P,c(x)^alpha)

    p the softmax, g the one-hot target. d_G,c is the paper's distance field of class c in the
    ground truth, edt(fg) + edt(bg) with fg = (target == c): the distance of each pixel to the
    nearest pixel on the other side of the class boundary (1 next to the boundary); d_P,c the same
    for the thresholded prediction fg = (p_c > 0.5). A class that is absent (or covers the whole
    image) has a zero field, as in the common reference implementation (MONAI's `HausdorffDTLoss`,
    which this equals with include_background=True). Ignored pixels count as "not class c" in both
    fields and contribute nothing.
    Classes are averaged with `weight`; all classes count.

    Cost: ground-truth fields come from the data workers (`target_fn`: keys `hausdorff_maps`,
    `hausdorff_classes`, float16, only the classes present, at most `max_maps` per image, the
    largest kept); without them the loss computes them the same way (a host sync). Prediction
    fields are computed each step, only for the classes predicted (at most `max_maps` per image):
    with OpenCV when the logits are on the CPU, else with the exact vectorised torch transform
    (no sync); `dt_stride` > 1 subsamples them (error up to about `dt_stride` px).

    `fields="shared"` is the former approximation: one map per image, d = distance to the nearest
    label change of the ground truth / of the argmax prediction, shared by every class (C times
    fewer transforms; pixels next to a change get 0 instead of 1). It is not a rescaling of the
    paper's loss: on 8 SyntheticShapes masks (19 classes, 64x128 and 128x256, alpha 2,
    dt_stride 1) shared / per-class ranged 0.05-6.8, medians 0.32-0.36 at random logits, 0.54-0.66
    for the ground truth shifted by 4 px, 1.5-1.6 with the second-largest class predicted as
    background.

    Args:
        alpha: exponent of the distances (paper: 2); > 0.
        fields: "per_class" (the paper) or "shared" (the approximation above).
        distance_scale: distances are measured in units of this many pixels (1: pixels, as the paper).
        dt_stride: subsampling of the prediction's distance transform (1 = exact).
        max_maps: classes per image with a field, ground truth and prediction ("per_class").
        weight: optional per-class weights of the mean over classes.
        ignore_index: label that contributes nothing.
    """

    map_prefix = "hausdorff"
    map_kind = "unsigned"
    extra_key = "hausdorff_gt_distance"  # fields="shared"

    def __init__(self, alpha: float = 2.0, fields: str = "per_class", distance_scale: float = 1.0,
                 dt_stride: int = 1, max_maps: int = 16, weight: list[float] | None = None,
                 ignore_index: int = 255) -> None:
        super().__init__(ignore_index, weight)
        if fields not in FIELDS:
            raise ValueError(f"HausdorffDTLoss: fields={fields!r}; expected one of {FIELDS}")
        if alpha <= 0 or distance_scale <= 0 or dt_stride < 1 or max_maps < 1:
            raise ValueError(f"HausdorffDTLoss: alpha={alpha} and distance_scale={distance_scale} must be > 0, "
                             f"dt_stride={dt_stride} and max_maps={max_maps} >= 1")
        self.alpha = float(alpha)
        self.fields = fields
        self.distance_scale = float(distance_scale)
        self.dt_stride = int(dt_stride)
        self.max_maps = int(max_maps)

    def target_fn(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """per_class: `hausdorff_maps` [max_maps,H,W] float16 fields and `hausdorff_classes`
        [max_maps] int64; shared: `hausdorff_gt_distance` [H,W] float16."""
        if self.fields == "shared":
            return {self.extra_key: boundary_distance(mask).astype(np.float16)}
        return self.gt_target_fn(mask)

    def _powered(self, maps: torch.Tensor) -> torch.Tensor:
        """maps^alpha in float32, computed in place on a fresh copy (the maps carry no gradient)."""
        out = maps.to(torch.float32, copy=True)
        return out.square_() if self.alpha == 2.0 else out.pow_(self.alpha)

    def distance_weights(self, gt: tuple[torch.Tensor, torch.Tensor], pred: tuple[torch.Tensor, torch.Tensor],
                         valid: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Dense [N,C,H,W] factor w_c (d_G,c^alpha + d_P,c^alpha) / scale^alpha of each squared
        error, 0 at ignored pixels (`valid` [N,1,H,W] False).

        The compact maps are scatter-added by class id; unused slots (id -1) hold zero maps and add
        nothing to class 0. One dense no-grad tensor makes the loss a single product with the
        squared errors (cheaper than gathering the errors per slot, forward and backward)."""
        (gt_maps, gt_ids), (pred_maps, pred_ids) = gt, pred
        n, _, h, w = gt_maps.shape
        dist = gt_maps.new_zeros((n, num_classes, h, w), dtype=torch.float32)
        for maps, ids in ((gt_maps, gt_ids), (pred_maps, pred_ids)):
            index = ids.clamp_min(0)[:, :, None, None].expand(n, ids.shape[1], h, w)
            dist.scatter_add_(1, index, self._powered(maps))
        dist.mul_(valid)
        factor = self.distance_scale ** -self.alpha
        if self.weight is not None:
            return dist.mul_(self.weight.view(1, -1, 1, 1) * factor)
        return dist.mul_(factor) if factor != 1.0 else dist

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        if self.fields == "shared":
            return self.shared_loss(logits, target, extras)
        valid, labels = self.valid_and_labels(target)
        valid4 = valid.unsqueeze(1)
        probs = logits.softmax(dim=1)
        # p - g: subtract 1 at the true class of each valid pixel (cheaper than building the one-hot);
        # ignored pixels keep p - 0 here, and get a zero distance factor below
        err = probs.scatter_add(1, labels.unsqueeze(1), -valid4.to(probs.dtype))
        gt_maps, gt_ids = self.gt_maps(target, extras)
        if gt_maps.device.type == "cpu":  # drop the unused slots (used ones come first); free on the CPU
            k = int((gt_ids >= 0).sum(1).max()) if gt_ids.numel() else 0
            gt_maps, gt_ids = gt_maps[:, :k], gt_ids[:, :k]
        # the prediction thresholded at 0.5; ignored pixels are "not c" for every class
        pred_fields = mask_fields((probs.detach() > 0.5) & valid4, self.max_maps, self.dt_stride)
        dist = self.distance_weights((gt_maps, gt_ids), pred_fields, valid4, logits.shape[1])
        # the factor is 0 at ignored pixels, so they change neither the value nor any gradient
        total = torch.dot(err.square().flatten(), dist.flatten())
        classes = logits.shape[1] if self.weight is None else self.weight.sum().clamp_min(1e-12)
        return safe_div(total, valid.sum() * classes)

    def shared_loss(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        """`fields="shared"`: one distance-to-label-change map per image for every class."""
        probs, onehot, valid = self.probs_onehot(logits, target)
        if self.extra_key in extras:
            d_gt = extras[self.extra_key].to(target.device, torch.float32)
        else:
            d_gt = label_change_distance(target)
        pred = torch.where(valid[:, 0], logits.detach().argmax(1), torch.full_like(target, self.ignore_index))
        d_pred = label_change_distance(pred, self.dt_stride)
        dist = (d_pred / self.distance_scale).pow(self.alpha) + (d_gt / self.distance_scale).pow(self.alpha)
        sq_err = (probs - onehot).square()  # 0 at ignored pixels (both are 0 there)
        if self.weight is None:
            per_pixel = sq_err.mean(dim=1)
        else:
            per_pixel = (sq_err * self.weight.view(1, -1, 1, 1)).sum(dim=1) / self.weight.sum().clamp_min(1e-12)
        return safe_div((per_pixel * dist).sum(), valid.sum().float())
