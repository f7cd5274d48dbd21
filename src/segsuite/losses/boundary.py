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
    """Boundary loss (Kervadec et al. 2019), optionally combined with a region loss on a schedule.

    L_B = mean over (image, present class c, non-ignored pixel x) of phi_c(x) s_c(x), where s is
    the softmax and phi_c the signed distance map of class c in the ground truth (distance to the
    class outside, -(distance to the outside - 1) inside; classes absent from an image have no map
    and contribute nothing, as in the authors' code). Distances are in pixels of the crop. L_B is
    negative at a perfect prediction (its minimum), so it is meant to be combined with a region loss:

        loss = w_R(t) * region + w_B(t) * L_B,  t = step / max_steps (from `set_progress`)

    `schedule`: "constant" (w_R = 1, w_B = start), "increase" (w_R = 1, w_B ramps start->end),
    "rebalance" (paper: w_B ramps start->end and w_R = 1 - w_B; the paper steps alpha = w_R from
    1 down by 0.01 per epoch). The ramp is linear over the first `ramp_fraction` of training.

    Args:
        region: the region loss module (paper: GeneralizedDiceLoss), or None for L_B alone.
        schedule: "constant", "increase" or "rebalance".
        start: boundary weight at the start.
        end: boundary weight at the end of the ramp.
        ramp_fraction: fraction of training over which the weight ramps.
        max_maps: at most this many classes per image get a map (largest kept; others count as absent).
        ignore_index: label that contributes nothing.
    """

    map_prefix = "boundary"
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
        """(region weight, boundary weight) at the current progress."""
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
        w_region, w_boundary = self.weights()
        loss = w_boundary * self.boundary_term(logits, target, extras)
        if self.region is not None and w_region > 0:
            loss = loss + w_region * self.region(logits, target, **extras)
        return loss


class HausdorffDTLoss(SegLoss):
    """Distance-transform Hausdorff loss (Karimi & Salcudean 2019):

        L = mean over non-ignored pixels x and classes c of (p_c - g_c)^2 (d_P(x)^alpha + d_G(x)^alpha)

    d_G / d_P: distance of x to the nearest label change of the ground truth / of the predicted
    (argmax) segmentation, i.e. to the segmentation boundary. For two classes this is the paper's
    field up to the boundary offset (pixels next to a change have distance 0 here, 1 in the
    paper's edt(fg) + edt(bg)); for C classes one boundary map per image replaces C one-vs-rest
    maps, which makes the loss ~C times cheaper. d_G comes from the workers (`target_fn`, key
    `hausdorff_gt_distance`) or the torch transform; d_P is a constant computed each step by the
    exact vectorised torch transform (`dt_stride` > 1 subsamples it). The ignore label counts as a
    label in both maps (its pixels are marked as such in the prediction too), so ignored logits
    change nothing. Distances are divided by `distance_scale` (1: pixels, as the paper). Classes
    are averaged with `weight`; all classes count.

    Args:
        alpha: exponent of the distances (paper: 2).
        distance_scale: distances are measured in units of this many pixels.
        dt_stride: subsampling of the prediction's distance transform (1 = exact).
        weight: optional per-class weights of the mean over classes.
        ignore_index: label that contributes nothing.
    """

    extra_key = "hausdorff_gt_distance"

    def __init__(self, alpha: float = 2.0, distance_scale: float = 1.0, dt_stride: int = 1,
                 weight: list[float] | None = None, ignore_index: int = 255) -> None:
        super().__init__(ignore_index, weight)
        if distance_scale <= 0 or dt_stride < 1:
            raise ValueError(f"HausdorffDTLoss: distance_scale={distance_scale} must be > 0, dt_stride={dt_stride} >= 1")
        self.alpha = float(alpha)
        self.distance_scale = float(distance_scale)
        self.dt_stride = int(dt_stride)

    def target_fn(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """`hausdorff_gt_distance` [H,W] float16: distance to the nearest ground-truth label change."""
        return {self.extra_key: boundary_distance(mask).astype(np.float16)}

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
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
