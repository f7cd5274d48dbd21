"""Distance maps for the distance-based losses (DPCE, boundary, Hausdorff).

Ground-truth maps are computed on the CPU with OpenCV's exact Euclidean distance transform
(`cv2.distanceTransform(..., DIST_L2, DIST_MASK_PRECISE)`, the same values as
`scipy.ndimage.distance_transform_edt` but ~8x faster), only for the classes present in the
mask, and normally inside the dataloader workers (see `target_fn` on the losses). Maps that
depend on the prediction (Hausdorff) use `label_change_distance`, a vectorised exact transform
in torch (separable: 1D distances by cumulative max/min, then a chunked min-plus pass along the
shorter image axis), which also serves as the no-sync fallback for ground-truth maps.

Per-class maps are stored compactly: `[K,H,W]` float16 maps for at most K present classes plus a
`[K]` int64 vector of their class ids (-1 pads unused slots), so a batch collates to fixed shapes
whatever the number of classes (C=182 costs the same as C=19).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import torch

IGNORE_INDEX = 255


def _edt(nonzero: np.ndarray) -> np.ndarray:
    """Distance of each non-zero pixel to the nearest zero pixel (0 on zero pixels), float32."""
    return cv2.distanceTransform(nonzero.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def present_classes(mask: np.ndarray, max_maps: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Class ids present in `mask` (largest first when more than `max_maps` are present)."""
    values, counts = np.unique(mask, return_counts=True)
    keep = values != ignore_index
    values, counts = values[keep], counts[keep]
    if len(values) > max_maps:
        values = values[np.argsort(-counts, kind="stable")[:max_maps]]
    return np.sort(values)


def inside_outside_distances(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d_in, d_out) for a boolean region: d_in is each inside pixel's distance to the nearest
    outside pixel (0 outside), d_out each outside pixel's distance to the nearest inside pixel
    (0 inside). A region covering everything (or nothing) has no boundary: both maps are 0."""
    if region.all() or not region.any():
        zeros = np.zeros(region.shape, dtype=np.float32)
        return zeros, zeros
    return _edt(region), _edt(~region)


def class_distance_maps(
    mask: np.ndarray, kind: str, max_maps: int, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """Per present class maps `[max_maps,H,W]` float16 and class ids `[max_maps]` int64 (-1 = unused).

    kind "signed": Kervadec's level set, d_out outside and -(d_in - 1) inside (0 on the inner
    boundary, negative deeper inside). kind "unsigned": Karimi's d_in + d_out (distance to the
    nearest pixel on the other side of the boundary; >= 1 everywhere if the class has a boundary).
    Ignored pixels count as "not this class".
    """
    if kind not in ("signed", "unsigned"):
        raise ValueError(f"kind={kind!r}; expected 'signed' or 'unsigned'")
    h, w = mask.shape
    maps = np.zeros((max_maps, h, w), dtype=np.float16)
    ids = np.full((max_maps,), -1, dtype=np.int64)
    for k, c in enumerate(present_classes(mask, max_maps, ignore_index)):
        region = mask == c
        d_in, d_out = inside_outside_distances(region)
        if kind == "signed":
            value = d_out - np.maximum(d_in - 1.0, 0.0)
        else:
            value = d_in + d_out
        maps[k] = value
        ids[k] = c
    return maps, ids


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the nearest label change (one map for all classes), float32.

    A pixel is on a boundary if a 4-neighbour has a different label (the ignore label counts as a
    label). Without any boundary the map is all zero."""
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if not edge.any():
        return np.zeros(mask.shape, dtype=np.float32)
    return _edt(~edge)


def dense_from_compact(maps: torch.Tensor, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Scatter compact maps `[N,K,H,W]` with class ids `[N,K]` (-1 unused) into `[N,C,H,W]` (0 elsewhere)."""
    n, k, h, w = maps.shape
    used = ids >= 0
    index = torch.where(used, ids, torch.full_like(ids, num_classes))  # unused -> overflow slot
    dense = maps.new_zeros((n, num_classes + 1, h, w), dtype=torch.float32)
    dense.scatter_(1, index[:, :, None, None].expand(n, k, h, w), maps.float())
    return dense[:, :num_classes]


# -- torch: exact Euclidean distance to the nearest pixel of the opposite value -------------------
def _row_distance(hit: torch.Tensor) -> torch.Tensor:
    """Distance along the last axis to the nearest True (inf if the row has none)."""
    width = hit.shape[-1]
    idx = torch.arange(width, device=hit.device).expand_as(hit)
    far = 4 * width
    left = torch.where(hit, idx, torch.full_like(idx, -far)).cummax(-1).values
    right = torch.where(hit, idx, torch.full_like(idx, 2 * far)).flip(-1).cummin(-1).values.flip(-1)
    dist = torch.minimum(idx - left, right - idx).float()
    return torch.where(dist > width, torch.full_like(dist, math.inf), dist)


def _squared_edt_to(hit: torch.Tensor, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Squared distance of every pixel to the nearest True pixel of `hit` [B,H,W] (inf if none).

    Separable exact transform: 1D distances along W (cummax/cummin), then for each column the
    min over rows y' of (y - y')^2 + g(y')^2, evaluated in row chunks to bound memory."""
    g2 = _row_distance(hit).square()  # [B,H,W]
    b, h, w = g2.shape
    rows = torch.arange(h, device=hit.device, dtype=torch.float32)
    step = max(1, chunk_elems // max(1, b * h * w))
    out = []
    for start in range(0, h, step):  # loop over row chunks (bounded memory), not over samples
        dy2 = (rows[start:start + step, None] - rows[None, :]).square()  # [ch,H]
        out.append((dy2[None, :, :, None] + g2[:, None, :, :]).amin(dim=2))
    return torch.cat(out, dim=1)


def label_edges(labels: torch.Tensor) -> torch.Tensor:
    """Pixels of `labels` [B,H,W] with a 4-neighbour of a different label (torch `boundary_distance` edges)."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    return edge


def _strided_distance(maps: torch.Tensor, stride: int,
                      squared_distance: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`sqrt(squared_distance(maps))` at full size, computed on `maps` [B,H,W] subsampled by
    `stride` (then scaled and upsampled) with the quadratic pass along the shorter axis; pixels
    with no target at all (infinite distance) get 0."""
    h, w = maps.shape[-2:]
    small = maps[..., ::stride, ::stride] if stride > 1 else maps
    transpose = small.shape[-2] > small.shape[-1]
    if transpose:
        small = small.transpose(-1, -2)
    dist = squared_distance(small).sqrt()
    dist = torch.where(torch.isfinite(dist), dist, torch.zeros_like(dist))
    if transpose:
        dist = dist.transpose(-1, -2)
    if stride > 1:
        dist = (dist * stride).repeat_interleave(stride, -2).repeat_interleave(stride, -1)[..., :h, :w]
    return dist


@torch.no_grad()
def label_change_distance(labels: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Torch twin of `boundary_distance` for a batch `labels` [B,H,W]: exact Euclidean distance of
    each pixel to the nearest pixel on a label change, 0 for maps without any change. `stride` > 1
    works on labels subsampled by `stride` (error up to about `stride` pixels, cost / stride^3)."""
    return _strided_distance(labels, stride, lambda small: _squared_edt_to(label_edges(small)))


@torch.no_grad()
def edt_to_opposite(fg: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Euclidean distance of each pixel of a binary map `fg` [B,H,W] to the nearest pixel of the
    opposite value (Karimi's field: edt(fg) + edt(bg)); 0 for maps that are all one value.

    `stride` > 1 computes on a map subsampled by `stride` and scales/upsamples the result
    (error up to about `stride` pixels; cost falls by stride^3)."""
    return _strided_distance(fg.bool(), stride,
                             lambda small: torch.where(small, _squared_edt_to(~small), _squared_edt_to(small)))
