"""`RandomScaleCrop`: the same crops as RandomScale + a random crop, resizing only the crop's window.

The checks decode, from images that store their own source coordinates, which source pixel every
output pixel came from: the window, the scale, image/mask alignment and the random placement
follow from those coordinates, not from the transform's own parameters.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from segsuite.data.transforms import RandomScaleCrop


def coordinate_image(height: int, width: int) -> np.ndarray:
    """uint8 [H,W,3]: R = x mod 256, G = y mod 256, B = 16 * (x // 256) + y // 256."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x % 256, y % 256, 16 * (x // 256) + y // 256], axis=-1).astype(np.uint8)


def source_coordinates(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g, b = (image[..., i].astype(np.int64) for i in range(3))
    return r + 256 * (b // 16), g + 256 * (b % 16)  # x, y


def run(transform: A.BasicTransform, image: np.ndarray, mask: np.ndarray, seed: int) -> dict:
    pipeline = A.Compose([transform])
    pipeline.set_random_seed(seed)
    return pipeline(image=image, mask=mask)


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.0, 1.37, 2.0])
def test_window_size_scale_and_mask_alignment(scale):
    height, width, crop = 375, 500, 256
    image = coordinate_image(height, width)
    labels = (np.arange(height)[:, None] * 7 + np.arange(width)[None, :] * 3) % 251  # a function of (y, x)
    transform = RandomScaleCrop(crop, crop, scale_limit=(scale - 1, scale - 1),
                                interpolation=cv2.INTER_NEAREST, mask_interpolation=cv2.INTER_NEAREST)
    for seed in range(5):
        out = run(transform, image, labels.astype(np.uint8), seed)
        expected = (min(crop, int(height * scale)), min(crop, int(width * scale)))
        assert out["image"].shape[:2] == out["mask"].shape == expected
        x, y = source_coordinates(out["image"])
        # each output row/column reads one source row/column, in order, inside the image
        assert (np.diff(x, axis=1) >= 0).all() and (np.diff(y, axis=0) >= 0).all()
        assert (x == x[:1]).all() and (y == y[:, :1]).all()
        assert 0 <= x.min() and x.max() < width and 0 <= y.min() and y.max() < height
        # the window spans out/scale source pixels (rounded), so the factor is kept; nearest
        # sampling shows its last pixel only within 1/scale of the end when shrinking
        for out_size, coords in ((expected[1], x[0]), (expected[0], y[:, 0])):
            span = coords.max() - coords.min() + 1
            assert abs(span - out_size / scale) <= 0.5 + max(1.0, 1.0 / scale), (out_size, span, scale)
        # the mask was cut from the same window as the image
        np.testing.assert_array_equal(out["mask"], labels[y, x])


def test_linear_resize_matches_scaling_the_whole_image_then_cropping():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 1.5)
    mask = np.zeros((120, 160), np.uint8)
    where = RandomScaleCrop(64, 96, scale_limit=(1.0, 1.0), interpolation=cv2.INTER_NEAREST)
    linear = RandomScaleCrop(64, 96, scale_limit=(1.0, 1.0), interpolation=cv2.INTER_LINEAR)
    whole = cv2.resize(image, (320, 240), interpolation=cv2.INTER_LINEAR)  # scale 2, then crop
    for seed in range(4):
        x, y = source_coordinates(run(where, coordinate_image(120, 160), mask, seed)["image"])
        top, left = 2 * y.min(), 2 * x.min()
        out = run(linear, image, mask, seed)["image"]
        assert out.shape == (64, 96, 3)
        # equal away from the window's edge (there the window repeats its border pixel)
        np.testing.assert_array_equal(out[1:-1, 1:-1], whole[top + 1:top + 63, left + 1:left + 95])


def test_crop_positions_cover_the_whole_image():
    height, width = 100, 200
    image, mask = coordinate_image(height, width), np.zeros((height, width), np.uint8)
    transform = RandomScaleCrop(40, 40, scale_limit=(0.0, 0.0), interpolation=cv2.INTER_NEAREST)
    lefts, tops = set(), set()
    for seed in range(400):
        x, y = source_coordinates(run(transform, image, mask, seed)["image"])
        lefts.add(int(x.min()))
        tops.add(int(y.min()))
    assert min(lefts) == 0 and max(lefts) == width - 40 and len(lefts) > 100
    assert min(tops) == 0 and max(tops) == height - 40 and len(tops) > 40


def test_short_sides_are_kept_whole_without_padding():
    image, mask = coordinate_image(30, 300), np.zeros((30, 300), np.uint8)
    out = run(RandomScaleCrop(64, 64, scale_limit=(0.0, 0.0), interpolation=cv2.INTER_NEAREST), image, mask, 0)
    _, y = source_coordinates(out["image"])
    assert out["image"].shape[:2] == (30, 64)
    assert set(y[:, 0].tolist()) == set(range(30))


@pytest.mark.parametrize("kwargs", [{"height": 0, "width": 8}, {"height": 8, "width": 8, "scale_limit": (0.5, 0.1)},
                                    {"height": 8, "width": 8, "scale_limit": (-1.0, 0.0)}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match="RandomScaleCrop"):
        RandomScaleCrop(**kwargs)
