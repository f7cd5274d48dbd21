"""Distance maps for the distance-based losses (DPCE, boundary, Hausdorff).

Ground-truth maps are computed on the CPU with OpenCV's exact Euclidean distance transform
(`cv2.distanceTransform(..., DIST_L2, DIST_MASK_PRECISE)`, the same values as
`scipy.ndimage.distance_transform_edt` but ~8x faster), only for the classes present in the
mask, and normally inside the dataloader workers (see `target_fn` on the losses). Maps that
depend on the prediction (Hausdorff) are computed each step, only for the classes predicted
(`mask_fields`): with OpenCV when the prediction is on the CPU (no transfer; one
transform is far cheaper than the torch one there), otherwise with `edt_to_opposite`, a
vectorised exact transform in torch (separable: 1D distances by cumulative max/min, then a
chunked min-plus pass along the shorter image axis) that needs no host synchronisation.

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
    (0 inside). A region covering everything (or nothing) has no boundary: both maps are 0.

    d_in is computed on the region's bounding box grown by one pixel (clipped to the image): that
    ring is all outside, and any outside pixel beyond it is farther than its projection on the
    ring, so the values are exact; small regions cost a small transform."""
    if region.all() or not region.any():
        zeros = np.zeros(region.shape, dtype=np.float32)
        return zeros, zeros
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    d_in = np.zeros(region.shape, dtype=np.float32)
    d_in[box] = _edt(region[box])
    return d_in, _edt(~region)


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


# -- per-class fields of a prediction (Hausdorff) -------------------------------------------------
def top_classes(masks: torch.Tensor, max_maps: int) -> torch.Tensor:
    """Ids `[N,K]` (K = min(C, max_maps), -1 = unused slot) of the non-empty class masks in `masks`
    [N,C,H,W] (bool), the largest first; ties go to the lower id, the same rule as
    `present_classes`. No host synchronisation."""
    c = masks.shape[1]
    counts = masks.sum(dim=(2, 3))
    key = counts * (c + 1) + (c - torch.arange(c, device=masks.device))  # area first, then lower id
    top = key.topk(min(c, max_maps), dim=1).indices
    return torch.where(counts.gather(1, top) > 0, top, torch.full_like(top, -1))


@torch.no_grad()
def mask_fields(masks: torch.Tensor, max_maps: int, stride: int = 1,
                backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Karimi's field edt(fg) + edt(bg) of each non-empty class mask of `masks` [N,C,H,W] (bool,
    e.g. a prediction thresholded at 0.5): (maps float32 `[N,K,H,W]`, class ids `[N,K]`, -1 =
    unused slot with an all-zero map).

    Only the `max_maps` largest masks of each image get a map (`top_classes`); a mask covering
    the whole image has no boundary and a zero map. `stride` > 1 computes on masks subsampled by
    `stride`, then scales and upsamples (error up to about `stride` pixels). On the CPU the maps
    come from OpenCV, one transform per non-empty mask (K shrinks to the most masks any image
    has); elsewhere from the torch transform over all K slots, without synchronisation. Both give
    the same values (to float32 rounding); `backend` ("opencv" | "torch") forces one."""
    backend = backend or ("opencv" if masks.device.type == "cpu" else "torch")
    if backend not in ("opencv", "torch"):
        raise ValueError(f"backend={backend!r}; expected 'opencv' or 'torch'")
    ids = top_classes(masks, max_maps)
    n, _, h, w = masks.shape
    if backend == "torch":
        chosen = masks.gather(1, ids.clamp_min(0)[:, :, None, None].expand(n, ids.shape[1], h, w))
        chosen &= (ids >= 0)[:, :, None, None]
        return edt_to_opposite(chosen.flatten(0, 1), stride).view(n, -1, h, w), ids
    k = int((ids >= 0).sum(1).max()) if n else 0
    ids = ids[:, :k]
    maps = np.zeros((n, k, h, w), dtype=np.float32)
    small = masks[..., ::stride, ::stride].cpu().numpy()
    for i, row in enumerate(ids.tolist()):
        for j, c in enumerate(row):
            if c < 0:
                continue
            d_in, d_out = inside_outside_distances(small[i, c])
            field = d_in + d_out
            if stride > 1:
                field = np.repeat(np.repeat(field * stride, stride, 0), stride, 1)[:h, :w]
            maps[i, j] = field
    return torch.from_numpy(maps).to(masks.device), ids
