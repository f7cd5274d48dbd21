"""Distance maps: OpenCV ground-truth maps and the torch transform against scipy's exact EDT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from segsuite.losses.distance import (
    boundary_distance,
    class_distance_maps,
    dense_from_compact,
    edt_to_opposite,
    label_change_distance,
    present_classes,
)


def blobs(seed: int, h: int = 17, w: int = 23, c: int = 4, speckle: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), dtype=np.int64)
    for k in range(1, c):
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[max(0, y - 4):y + 4, max(0, x - 5):x + 5] = k
    mask[rng.random((h, w)) < speckle] = 255
    return mask


def karimi_field(region: np.ndarray) -> np.ndarray:
    if region.all() or not region.any():
        return np.zeros(region.shape)
    return distance_transform_edt(region) + distance_transform_edt(~region)


@pytest.mark.parametrize("seed", range(3))
def test_torch_transform_is_exact(seed):
    rng = np.random.default_rng(seed)
    maps = rng.random((4, 13, 21)) < [[[0.02]], [[0.5]], [[0.0]], [[1.0]]]  # sparse, dense, empty, full
    ours = edt_to_opposite(torch.from_numpy(maps)).numpy()
    for m, o in zip(maps, ours):
        np.testing.assert_allclose(o, karimi_field(m), atol=1e-4)
    tall = edt_to_opposite(torch.from_numpy(maps.transpose(0, 2, 1).copy())).numpy()  # H > W path
    np.testing.assert_allclose(tall, ours.transpose(0, 2, 1), atol=1e-4)


def test_torch_transform_with_stride_is_close():
    mask = torch.from_numpy(blobs(0, 32, 48) == 1)
    exact = edt_to_opposite(mask[None])
    coarse = edt_to_opposite(mask[None], stride=2)
    assert coarse.shape == exact.shape
    assert (coarse - exact).abs().max() <= 2 * 2 + 1e-4


@pytest.mark.parametrize("seed", range(3))
def test_class_maps_match_scipy(seed):
    mask = blobs(seed)
    signed, ids = class_distance_maps(mask, "signed", max_maps=6)
    unsigned, ids_u = class_distance_maps(mask, "unsigned", max_maps=6)
    assert signed.dtype == np.float16 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ids_u)
    present = sorted(set(np.unique(mask)) - {255})
    assert ids.tolist() == present + [-1] * (6 - len(present))
    for k, c in enumerate(present):
        pos = mask == c
        phi = distance_transform_edt(~pos) * ~pos - (distance_transform_edt(pos) - 1) * pos
        np.testing.assert_allclose(signed[k], phi, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(unsigned[k], karimi_field(pos), rtol=2e-3, atol=2e-3)
    assert not signed[len(present):].any()


def test_present_classes_keeps_the_largest():
    mask = np.array([[0, 0, 0, 1, 2, 2, 255, 255, 255, 255]])
    assert present_classes(mask, 2).tolist() == [0, 2]
    assert present_classes(mask, 5).tolist() == [0, 1, 2]


def test_boundary_distance_matches_scipy():
    mask = blobs(4)
    edge = np.zeros(mask.shape, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[1:] != mask[:-1]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    np.testing.assert_allclose(boundary_distance(mask), distance_transform_edt(~edge), atol=1e-4)
    assert not boundary_distance(np.zeros((4, 5), np.int64)).any()


def test_dense_from_compact_scatters_by_class_id():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float16).view(2, 3, 2, 2)
    ids = torch.tensor([[2, 0, -1], [1, -1, -1]])
    dense = dense_from_compact(maps, ids, 4)
    assert dense.shape == (2, 4, 2, 2)
    assert torch.equal(dense[0, 2], maps[0, 0].float()) and torch.equal(dense[0, 0], maps[0, 1].float())
    assert torch.equal(dense[1, 1], maps[1, 0].float())
    assert dense[0, 1].abs().sum() == 0 and dense[0, 3].abs().sum() == 0 and dense[1, 0].abs().sum() == 0


@pytest.mark.parametrize("seed", range(3))
def test_torch_label_change_distance_matches_opencv(seed):
    masks = np.stack([blobs(seed), blobs(seed + 10), np.zeros((17, 23), np.int64)])
    ours = label_change_distance(torch.from_numpy(masks)).numpy()
    for m, o in zip(masks, ours):
        np.testing.assert_allclose(o, boundary_distance(m), atol=1e-4)
    # subsampling loses structures thinner than the stride, so bound the error on solid blobs
    solid = torch.from_numpy(blobs(seed, 32, 40, speckle=0.0))[None]
    exact, coarse = label_change_distance(solid), label_change_distance(solid, stride=2)
    assert coarse.shape == exact.shape and (coarse - exact).abs().max() <= 2 * 2 + 1e-4
