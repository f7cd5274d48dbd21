"""segsuite.data.io: label lookup tables, colour masks, label PNG decoding and file pairing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from segsuite.data import io as dataio
from segsuite.data.datasets.base import DatasetError
from support import dataset_trees as trees


def test_apply_lut_maps_every_value_and_names_unknown_ones():
    lut = dataio.build_lut({0: 255, 1: 0, 2: 1, 255: 255})
    raw = np.array([[0, 1, 2], [255, 2, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(dataio.apply_lut(raw, lut, Path("x.png")), [[255, 0, 1], [255, 1, 0]])
    with pytest.raises(DatasetError, match=r"y\.png: label values \[3, 7\].*valid raw values: 0\.\.2, 255"):
        dataio.apply_lut(np.array([[3, 7, 1]], dtype=np.uint8), lut, Path("y.png"))


def test_apply_lut_wide_integers_outside_table():
    lut = dataio.build_lut({k: k for k in range(5)})
    np.testing.assert_array_equal(dataio.apply_lut(np.array([[4, 0]], np.uint16), lut, Path("a")), [[4, 0]])
    with pytest.raises(DatasetError, match=r"label values \[300\]"):
        dataio.apply_lut(np.array([[300, 1]], np.uint16), lut, Path("a"))


def test_colour_to_index_with_ignore_colour():
    palette = np.array([[0, 0, 0], [10, 20, 30], [255, 0, 0]], np.uint8)
    rgb = np.array([[[10, 20, 30], [255, 0, 0]], [[0, 0, 0], [9, 9, 9]]], np.uint8)
    out = dataio.colour_to_index(rgb, palette, Path("m.png"), ignore_colours=[[9, 9, 9]])
    np.testing.assert_array_equal(out, [[1, 2], [0, 255]])


def test_read_label_png_palette_gives_indices_grey_gives_values(tmp_path):
    labels = trees.random_labels("p", list(range(21)) + [255])
    trees.write_palette_png(tmp_path / "p.png", labels)
    trees.write_grey_png(tmp_path / "g.png", labels)
    np.testing.assert_array_equal(dataio.read_label_png(tmp_path / "p.png"), labels)
    np.testing.assert_array_equal(dataio.read_label_png(tmp_path / "g.png"), labels)
    wide = (labels.astype(np.uint16) * 300)
    assert cv2.imwrite(str(tmp_path / "w.png"), wide)  # 16-bit grey PNG
    np.testing.assert_array_equal(dataio.read_label_png(tmp_path / "w.png"), wide)


def test_read_image_is_rgb(tmp_path):
    image = trees.random_image("rgb")
    trees.write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(dataio.read_image(tmp_path / "a.png"), image)
    with pytest.raises(DatasetError, match=r"missing\.jpg: cannot read"):
        dataio.read_image(tmp_path / "missing.jpg")


def test_pair_files_in_list_order():
    images = {"b": Path("b.jpg"), "a": Path("a.jpg")}
    masks = {"a": Path("a.png"), "b": Path("b.png")}
    samples = dataio.pair_files(images, masks, "t", skip_bad=False, names=["b", "a"])
    assert [(s.name, s.image.name, s.mask.name) for s in samples] == [("b", "b.jpg", "b.png"), ("a", "a.jpg", "a.png")]
    with pytest.raises(DatasetError, match="'c' is listed but neither its image nor its mask exists"):
        dataio.pair_files(images, masks, "t", skip_bad=False, names=["a", "c"])
