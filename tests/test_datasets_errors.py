"""Bad input: missing trees, unpaired/unreadable/truncated files, size and label mismatches, skip_bad."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import scipy.io
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from PIL import Image

from segsuite.catalog import config_class, config_names, needs_files, own_data
from segsuite.data.datasets.base import DatasetError
from support import dataset_trees as trees
from support.dataset_trees import compose


def instantiate(node, **kwargs):
    """Hydra's instantiate, re-raising the dataset's own error (Hydra wraps it; the cause is chained)."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        raise err.__cause__ from None


def load_all(ds) -> list[str]:
    return [ds[i]["name"] for i in range(len(ds))]


@pytest.mark.parametrize("name", [n for n in config_names("dataset") if needs_files(n)])
def test_missing_root_names_tree_and_download(tmp_path, name):
    """The message names the folder, and the tree and the download its dataset class declares."""
    cls = config_class("dataset", name)
    assert cls.tree and cls.download, f"{cls.__module__}.{cls.__qualname__} declares no `tree` or `download`"
    own = [*trees.tree_overrides(name), "dataset.class_names=[a,b,c]"] if own_data(name) else []
    cfg = compose(name, tmp_path, own)
    with pytest.raises(DatasetError) as err:
        instantiate(cfg.dataset.train, transform=None)
    message = str(err.value)
    assert str(tmp_path) in message and cls.tree in message and cls.download in message


def test_missing_split_folder_is_named(tmp_path):
    root = trees.build_camvid_tree(tmp_path)
    shutil.rmtree(root / "valannot")
    cfg = compose("camvid", tmp_path)
    with pytest.raises(DatasetError, match="valannot"):
        instantiate(cfg.dataset.val, transform=None)
    assert len(instantiate(cfg.dataset.train, transform=None)) == 4


def test_missing_list_file_points_to_preparation(tmp_path):
    trees.build_voc_tree(tmp_path)  # no SBD step: train_aug.txt and SegmentationClassAug/ do not exist
    cfg = compose("voc_aug", tmp_path)
    with pytest.raises(DatasetError, match=r"train_aug\.txt[\s\S]*segsuite-prepare-voc-aug[\s\S]*datasets\.md"):
        instantiate(cfg.dataset.train, transform=None)


def test_missing_cityscapes_train_extra(tmp_path):
    root = trees.build_cityscapes_tree(tmp_path)
    shutil.rmtree(root / "leftImg8bit" / "train_extra")
    with pytest.raises(DatasetError, match="train_extra"):
        instantiate(compose("cityscapes_coarse", tmp_path).dataset.train, transform=None)


def test_image_without_mask(tmp_path):
    root = trees.build_camvid_tree(tmp_path)
    (root / "trainannot" / "0016E5_00390.png").unlink()
    cfg = compose("camvid", tmp_path)
    with pytest.raises(DatasetError, match=r"train/0016E5_00390\.png has no mask"):
        instantiate(cfg.dataset.train, transform=None)
    with pytest.warns(UserWarning, match="0016E5_00390.png has no mask"):
        ds = instantiate(cfg.dataset.train, transform=None, skip_bad=True)
    assert len(ds) == 3 and "0016E5_00390" not in load_all(ds)


def test_mask_without_image(tmp_path):
    root = trees.build_ade20k_tree(tmp_path)
    (root / "images" / "training" / "ADE_train_00000002.jpg").unlink()
    cfg = compose("ade20k", tmp_path)
    with pytest.raises(DatasetError, match=r"ADE_train_00000002\.png has no image"):
        instantiate(cfg.dataset.train, transform=None)
    with pytest.warns(UserWarning):
        assert len(instantiate(cfg.dataset.train, transform=None, skip_bad=True)) == 3


def test_listed_id_without_files(tmp_path):
    root = trees.build_voc_tree(tmp_path)
    (root / "JPEGImages" / f"{trees.VOC_VAL[1]}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"{trees.VOC_VAL[1]}.png has no image"):
        instantiate(compose("voc", tmp_path).dataset.val, transform=None)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_image(tmp_path, damage):
    root = trees.build_voc_tree(tmp_path)
    path = root / "JPEGImages" / f"{trees.VOC_TRAIN[1]}.jpg"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not an image" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    ds = instantiate(compose("voc", tmp_path).dataset.train, transform=None)
    expected = {"garbage": "not a readable image", "truncated": "truncated JPEG", "empty": "empty"}[damage]
    with pytest.raises(DatasetError, match=f"{trees.VOC_TRAIN[1]}.jpg.*{expected}"):
        ds[1]


def test_truncated_label_png(tmp_path):
    root = trees.build_cityscapes_tree(tmp_path)
    frame = trees.CITYSCAPES_FRAMES["val"][0]
    path = root / "gtFine" / "val" / "frankfurt" / f"{frame}_gtFine_labelIds.png"
    path.write_bytes(path.read_bytes()[:-20])
    ds = instantiate(compose("cityscapes", tmp_path).dataset.val, transform=None)
    with pytest.raises(DatasetError, match=f"{frame}_gtFine_labelIds.png: truncated PNG"):
        load_all(ds)


def test_corrupt_mat(tmp_path):
    root = trees.build_cocostuff10k_tree(tmp_path)
    name = trees.COCO10K_SPLITS["test"][0]
    (root / "annotations" / f"{name}.mat").write_bytes(b"MATLAB 5.0 MAT-file, broken")
    ds = instantiate(compose("cocostuff10k", tmp_path).dataset.test, transform=None)
    with pytest.raises(DatasetError, match=f"{name}.mat: not a readable .mat file"):
        load_all(ds)
    scipy.io.savemat(root / "annotations" / f"{name}.mat", {"labels": np.zeros(trees.SIZE, np.uint8)})
    with pytest.raises(DatasetError, match=r"no variable 'S'.*\['labels'\]"):
        load_all(ds)


def test_mask_size_differs_from_image(tmp_path):
    root = trees.build_ade20k_tree(tmp_path)
    trees.write_grey_png(root / "annotations" / "validation" / "ADE_val_00000001.png", np.ones((5, 7), np.uint8))
    ds = instantiate(compose("ade20k", tmp_path).dataset.val, transform=None)
    with pytest.raises(DatasetError, match=r"ADE_val_00000001\.png: mask is 7x5 .* is 16x12"):
        ds[0]


@pytest.mark.parametrize("name, bad_value", [("camvid", 12), ("voc", 21), ("cityscapes", 34), ("ade20k", 151),
                                             ("cocostuff164k", 182), ("folder", 3)])
def test_label_values_outside_classes(tmp_path, name, bad_value):
    trees.tree_builder(name)(tmp_path)
    cfg = compose(name, tmp_path, trees.tree_overrides(name))
    ds = instantiate(cfg.dataset.val, transform=None)
    path = ds.samples[0].mask
    labels = np.array(Image.open(path))
    labels[0, :3] = bad_value
    trees.write_labels(path, labels, type(ds).label_encoding)
    with pytest.raises(DatasetError, match=rf"{path.name}: label values \[{bad_value}\]"):
        ds[0]


def test_cocostuff10k_value_outside_ids(tmp_path):
    root = trees.build_cocostuff10k_tree(tmp_path)
    name = trees.COCO10K_SPLITS["test"][1]
    scipy.io.savemat(root / "annotations" / f"{name}.mat", {"S": np.full(trees.SIZE, 300, np.uint16)})
    ds = instantiate(compose("cocostuff10k", tmp_path).dataset.test, transform=None)
    with pytest.raises(DatasetError, match=rf"{name}.mat: label values \[300\]"):
        ds[1]


def test_colour_png_as_label_is_rejected(tmp_path):
    root = trees.build_camvid_tree(tmp_path)
    trees.write_image(root / "testannot" / "Seq05VD_f00000.png", trees.random_image("x"))
    ds = instantiate(compose("camvid", tmp_path).dataset.test, transform=None)
    with pytest.raises(DatasetError, match="Seq05VD_f00000.png: label image has 3 channels"):
        load_all(ds)


def test_skip_bad_warns_once_per_file_and_never_substitutes_another_sample(tmp_path):
    root = trees.build_camvid_tree(tmp_path)
    (root / "train" / "0001TP_006720.png").write_bytes(b"junk")
    trees.write_grey_png(root / "trainannot" / "0016E5_00420.png", np.full(trees.SIZE, 99, np.uint8))
    ds = instantiate(compose("camvid", tmp_path).dataset.train, transform=None, skip_bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [[ds[i] for i in range(len(ds))] for _ in range(3)]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("0001TP_006720.png" in m for m in messages) and any("0016E5_00420.png" in m for m in messages)
    for epoch in items:   # each bad sample's item says so, naming its file; the others are themselves
        assert [item["name"] for item in epoch] == trees.CAMVID_SPLITS["train"]
        skipped = {item["name"]: item["skipped"] for item in epoch if "skipped" in item}
        assert set(skipped) == {"0001TP_006720", "0016E5_00420"}
        assert "0001TP_006720.png" in skipped["0001TP_006720"] and "0016E5_00420.png" in skipped["0016E5_00420"]
        assert all("mask" in item for item in epoch if "skipped" not in item)


def test_folder_class_count_must_match(tmp_path):
    trees.build_folder_tree(tmp_path)
    cfg = compose("folder", tmp_path, ["dataset.num_classes=5"])
    with pytest.raises(ValueError, match="3 class names but 5 classes expected"):
        instantiate(cfg.dataset.train, transform=None)


def test_folder_rgb_unknown_colour(tmp_path):
    base = tmp_path / "rgb"
    trees.write_image(base / "images" / "train" / "a.jpg", trees.random_image("a"))
    colours = np.zeros((*trees.SIZE, 3), np.uint8)
    colours[0, 0] = (1, 2, 3)
    trees.write_image(base / "masks" / "train" / "a.png", colours)
    cfg = compose("folder", tmp_path, [f"dataset.root={base}", "dataset.num_classes=2", "dataset.mask_format=rgb"])
    cfg.dataset.class_names = ["bg", "fg"]
    cfg.dataset.palette = [[0, 0, 0], [255, 255, 255]]
    ds = instantiate(cfg.dataset.train, transform=None)
    with pytest.raises(DatasetError, match=r"a\.png: colours \[\(1, 2, 3\)\] are not in the palette"):
        ds[0]
