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
    inside_outside_distances,
    label_change_distance,
    mask_fields,
    present_classes,
    top_classes,
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


def test_inside_distances_on_the_bounding_box_are_exact():
    # small regions, regions on the border and a thin diagonal: d_in is computed on the bbox + 1 px
    region = np.zeros((15, 19), bool)
    region[0:3, 0:4] = True
    region[7:9, 10:12] = True
    region[np.arange(10, 15), np.arange(14, 19)] = True
    d_in, d_out = inside_outside_distances(region)
    np.testing.assert_allclose(d_in, distance_transform_edt(region), atol=1e-4)
    np.testing.assert_allclose(d_out, distance_transform_edt(~region), atol=1e-4)
    single = np.zeros((6, 7), bool)
    single[5, 6] = True
    np.testing.assert_allclose(inside_outside_distances(single)[0], distance_transform_edt(single), atol=1e-4)


def test_top_classes_largest_first_ties_to_lower_id():
    labels = torch.tensor([[[0, 0, 0, 1, 2, 2, 3, -1]]])
    masks = torch.stack([labels == k for k in range(5)], 1)  # class 4 absent
    assert top_classes(masks, 8).tolist() == [[0, 2, 1, 3, -1]]
    assert top_classes(masks, 3).tolist() == [[0, 2, 1]]
    ids = present_classes(np.array([[0, 0, 0, 1, 2, 2, 3, 255]]), 3)  # the ground-truth rule
    assert sorted(ids.tolist()) == sorted(top_classes(masks, 3)[0].tolist())


@pytest.mark.parametrize("backend", ["opencv", "torch"])
@pytest.mark.parametrize("seed", range(3))
def test_mask_fields_match_scipy(backend, seed):
    labels = np.stack([blobs(seed), blobs(seed + 10), np.full((17, 23), 2)])  # 255: no class; one full mask
    masks = torch.from_numpy(np.stack([labels == k for k in range(5)], 1))
    maps, ids = mask_fields(masks, max_maps=5, backend=backend)
    assert maps.dtype == torch.float32 and maps.shape[:2] == ids.shape
    for n in range(3):
        present = sorted(set(np.unique(labels[n]).tolist()) - {255})
        assert sorted(c for c in ids[n].tolist() if c >= 0) == present
        for k, c in enumerate(ids[n].tolist()):
            expected = karimi_field(labels[n] == c) if c >= 0 else np.zeros(labels[n].shape)
            np.testing.assert_allclose(maps[n, k].numpy(), expected, atol=1e-4)
    assert not maps[2].any()  # a mask covering the image has no boundary


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_mask_fields_backends_agree(stride):
    labels = torch.from_numpy(np.stack([blobs(20, 20, 31, c=6), blobs(21, 20, 31, c=6)]))
    masks = torch.stack([labels == k for k in range(6)], 1)
    cv_maps, cv_ids = mask_fields(masks, max_maps=3, stride=stride, backend="opencv")
    th_maps, th_ids = mask_fields(masks, max_maps=3, stride=stride, backend="torch")
    assert torch.equal(cv_ids, th_ids) and (th_ids >= 0).all()
    torch.testing.assert_close(cv_maps, th_maps, atol=1e-4, rtol=0)
    if stride > 1:  # subsampled: close to the exact maps on solid blobs
        solid = torch.from_numpy(blobs(22, 32, 40, speckle=0.0))[None]
        solid_masks = torch.stack([solid == k for k in range(4)], 1)
        exact, _ = mask_fields(solid_masks, 4)
        coarse, _ = mask_fields(solid_masks, 4, stride=stride)
        assert (coarse - exact).abs().max() <= 2 * stride + 1e-4
