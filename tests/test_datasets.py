"""The real-dataset loaders on miniature official trees: split sizes, pixel-exact train ids, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate
from PIL import Image

from segsuite.catalog import config_names, group_config, needs_files, own_data
from support import dataset_trees as trees
from support.dataset_trees import compose

CONF = Path(__file__).resolve().parents[1] / "conf"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build(cfg, split: str, **kwargs):
    return instantiate(cfg.dataset[split], transform=None, **kwargs)


# -- expected mappings, written from the datasets' documentation ------------------------------------
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
COCO_USED = [i for i in range(1, 183) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)]


def expected_camvid(v):
    return 255 if v == 11 else v


def expected_voc(v):
    return v


def expected_cityscapes(v):
    return CITYSCAPES_TRAIN_IDS.get(v, 255)


def expected_ade20k(v):
    return 255 if v == 0 else v - 1


def expected_coco164k_171(v):
    return 255 if v == 255 else COCO_USED.index(v + 1)


def expected_coco164k_182(v):
    return v


def expected_coco10k_171(v):
    return 255 if v == 0 else COCO_USED.index(v)


def expected_coco10k_182(v):
    return 255 if v == 0 else v - 1


def map_pixels(raw: np.ndarray, rule) -> np.ndarray:
    out = np.empty(raw.shape, dtype=np.int64)
    for value in np.unique(raw):
        out[raw == value] = rule(int(value))
    return out


def raw_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)  # mode L: grey values; mode P: palette indices


def raw_mat(path: Path) -> np.ndarray:
    return scipy.io.loadmat(path)["S"]


def check_samples(dataset, label_path, read_raw, rule, image_path) -> None:
    assert len(dataset) > 0
    for i in range(len(dataset)):
        item = dataset[i]
        raw = read_raw(label_path(item["name"]))
        np.testing.assert_array_equal(item["mask"], map_pixels(raw, rule), err_msg=item["name"])
        assert item["mask"].dtype == np.int64
        with Image.open(image_path(item["name"])) as image:
            rgb = np.array(image.convert("RGB")).astype(int)
        assert item["image"].dtype == np.uint8 and item["image"].shape == rgb.shape
        assert np.abs(item["image"].astype(int) - rgb).mean() < 3  # JPEG decoders may differ by a step


# -- per dataset ------------------------------------------------------------------------------------
def test_camvid(tmp_path):
    root = trees.build_camvid_tree(tmp_path)
    cfg = compose("camvid", tmp_path)  # default root: ${paths.data_dir}/CamVid
    for split, names in trees.CAMVID_SPLITS.items():
        ds = build(cfg, split)
        assert sorted(s.name for s in ds.samples) == sorted(names)
        check_samples(ds, lambda n, s=split: root / f"{s}annot" / f"{n}.png", raw_png, expected_camvid,
                      lambda n, s=split: root / s / f"{n}.png")
    assert ds.classes[0] == "Sky" and ds.classes[10] == "Bicyclist" and len(ds.classes) == 11
    assert cfg.dataset.crop_size == [360, 480] and cfg.dataset.num_classes == 11


def test_voc(tmp_path):
    root = trees.build_voc_tree(tmp_path)
    cfg = compose("voc", tmp_path)
    sizes = {"train": len(trees.VOC_TRAIN), "val": len(trees.VOC_VAL), "test": len(trees.VOC_VAL)}
    for split, size in sizes.items():
        ds = build(cfg, split)
        assert len(ds) == size
        check_samples(ds, lambda n: root / "SegmentationClass" / f"{n}.png", raw_png, expected_voc,
                      lambda n: root / "JPEGImages" / f"{n}.jpg")
    assert [s.name for s in build(cfg, "train").samples] == trees.VOC_TRAIN  # list order
    np.testing.assert_array_equal(ds.palette, trees.voc_colour_map(21))
    assert ds.classes[0] == "background" and ds.classes[15] == "person" and ds.classes[20] == "tvmonitor"
    trainval = instantiate(cfg.dataset.train, split="trainval", transform=None)
    assert len(trainval) == len(trees.VOC_TRAIN) + len(trees.VOC_VAL)


def test_voc_palette_png_holds_classes_not_colours(tmp_path):
    """Guard the test itself: the label files are palette PNGs whose colours differ from the indices."""
    root = trees.build_voc_tree(tmp_path)
    with Image.open(root / "SegmentationClass" / f"{trees.VOC_TRAIN[0]}.png") as image:
        assert image.mode == "P"
        colours = np.array(image.convert("RGB"))
    assert colours.max() > 20


def test_voc_aug_prepare_and_load(tmp_path):
    root = trees.build_voc_aug_tree(tmp_path)
    expected_ids = sorted((set(trees.SBD_TRAIN) | set(trees.SBD_VAL) | set(trees.VOC_TRAIN)) - set(trees.VOC_VAL))
    listed = (root / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert listed == expected_ids
    cfg = compose("voc_aug", tmp_path)
    train = build(cfg, "train")
    assert [s.name for s in train.samples] == expected_ids
    sbd_cls = tmp_path / "benchmark_RELEASE" / "dataset" / "cls"
    for i in range(len(train)):
        item = train[i]
        if item["name"] in trees.VOC_TRAIN:  # official VOC label (with its 255 borders) wins
            raw = raw_png(root / "SegmentationClass" / f"{item['name']}.png")
        else:
            raw = scipy.io.loadmat(sbd_cls / f"{item['name']}.mat")["GTcls"]["Segmentation"][0, 0]
        np.testing.assert_array_equal(item["mask"], raw.astype(np.int64))
    assert len(build(cfg, "val")) == len(trees.VOC_VAL)


def test_cityscapes_fine(tmp_path):
    root = trees.build_cityscapes_tree(tmp_path)
    cfg = compose("cityscapes", tmp_path)

    def label(annotation, split):
        return lambda n: root / annotation / split / n.split("_")[0] / f"{n}_{annotation}_labelIds.png"

    for split, source in (("train", "train"), ("val", "val"), ("test", "val")):
        ds = build(cfg, split)
        assert sorted(s.name for s in ds.samples) == sorted(trees.CITYSCAPES_FRAMES[source])
        check_samples(ds, label("gtFine", source), raw_png, expected_cityscapes,
                      lambda n, s=source: root / "leftImg8bit" / s / n.split("_")[0] / f"{n}_leftImg8bit.png")
    assert ds.classes[0] == "road" and ds.classes[18] == "bicycle"
    assert ds.palette[13].tolist() == [0, 0, 142] and ds.palette[0].tolist() == [128, 64, 128]


def test_cityscapes_coarse_reads_coarse_labels(tmp_path):
    trees.build_cityscapes_tree(tmp_path)
    cfg = compose("cityscapes_coarse", tmp_path)
    train = build(cfg, "train")
    assert len(train) == len(trees.CITYSCAPES_FRAMES["train"]) + len(trees.CITYSCAPES_FRAMES["train_extra"])
    for sample in train.samples:
        assert sample.mask.name.endswith("_gtCoarse_labelIds.png")
        raw = raw_png(sample.mask)
        np.testing.assert_array_equal(train.read_mask(sample.mask), map_pixels(raw, expected_cityscapes))
    assert all(s.mask.name.endswith("_gtFine_labelIds.png") for s in build(cfg, "val").samples)


def test_cityscapes_fine_coarse_mix(tmp_path):
    trees.build_cityscapes_tree(tmp_path)
    cfg = compose("cityscapes", tmp_path)
    cfg.dataset.train.sources = [["train", "gtFine"], ["train_extra", "gtCoarse"]]
    train = build(cfg, "train")
    kinds = sorted(s.mask.name.split("_")[-2] for s in train.samples)
    assert kinds == ["gtCoarse"] * 2 + ["gtFine"] * 4


def test_cityscapes_lut_is_one_table_over_all_ids():
    from segsuite.data.datasets.cityscapes import label_id_lut

    lut = label_id_lut()
    assert lut.shape == (256,)
    for label_id in range(34):
        assert lut[label_id] == expected_cityscapes(label_id)


def test_ade20k(tmp_path):
    root = trees.build_ade20k_tree(tmp_path)
    cfg = compose("ade20k", tmp_path)
    for split, folder, size in (("train", "training", 4), ("val", "validation", 2)):
        ds = build(cfg, split)
        assert len(ds) == size
        check_samples(ds, lambda n, f=folder: root / "annotations" / f / f"{n}.png", raw_png, expected_ade20k,
                      lambda n, f=folder: root / "images" / f / f"{n}.jpg")
    assert len(ds.classes) == 150 and ds.classes[0] == "wall" and ds.classes[149] == "flag"
    assert ds.palette.shape == (150, 3) and ds.palette[0].tolist() == [120, 120, 120]


@pytest.mark.parametrize("label_set", [171, 182])
def test_cocostuff164k(tmp_path, label_set):
    root = trees.build_cocostuff164k_tree(tmp_path)
    cfg = compose("cocostuff164k", tmp_path, [f"dataset.label_set={label_set}"])
    rule = expected_coco164k_171 if label_set == 171 else expected_coco164k_182
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        ds = build(cfg, split)
        assert len(ds) == len(trees.COCO164K_IDS[folder])
        check_samples(ds, lambda n, f=folder: root / "annotations" / f / f"{n}.png", raw_png, rule,
                      lambda n, f=folder: root / "images" / f / f"{n}.jpg")
    assert cfg.dataset.num_classes == label_set == len(ds.classes) == len(ds.palette)
    check_coco_names(ds.classes, label_set)


def check_coco_names(classes, label_set):
    unused_names = ["street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window", "desk", "door",
                    "blender", "hair brush"]
    assert classes[0] == "person" and classes[-1] == "wood"
    if label_set == 171:
        assert not set(unused_names) & set(classes)
        assert classes[COCO_USED.index(92)] == "banner" and classes[COCO_USED.index(13)] == "stop sign"
    else:
        assert classes[11] == "street sign" and classes[91] == "banner"


@pytest.mark.parametrize("label_set", [171, 182])
def test_cocostuff10k(tmp_path, label_set):
    root = trees.build_cocostuff10k_tree(tmp_path)
    cfg = compose("cocostuff10k", tmp_path, [f"dataset.label_set={label_set}"])
    rule = expected_coco10k_171 if label_set == 171 else expected_coco10k_182
    for split, names in (("train", trees.COCO10K_SPLITS["train"]), ("test", trees.COCO10K_SPLITS["test"])):
        ds = build(cfg, split)
        assert [s.name for s in ds.samples] == names
        check_samples(ds, lambda n: root / "annotations" / f"{n}.mat", raw_mat, rule,
                      lambda n: root / "images" / f"{n}.jpg")
    check_coco_names(ds.classes, label_set)


def test_folder_index_masks(tmp_path):
    root = trees.build_folder_tree(tmp_path)
    cfg = compose("folder", tmp_path, ["dataset.num_classes=3"])
    ds = build(cfg, "train")
    assert ds.classes == trees.FOLDER_CLASSES and len(ds) == 4
    check_samples(ds, lambda n: root / "masks" / "train" / f"{n}.png", raw_png, lambda v: v,
                  lambda n: root / "images" / "train" / f"{n}.jpg")
    assert len(build(cfg, "val")) == 2


def test_folder_rgb_masks_and_inline_names(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    for split in ("train", "val"):
        for n in range(2):
            labels = trees.random_labels(f"rgb{split}{n}", [0, 1, 2, 255])
            colours = np.array(palette + [[255, 255, 255]], dtype=np.uint8)[np.minimum(labels, 3)]
            trees.write_image(tmp_path / "data" / "images" / split / f"{n}.png", trees.random_image(str(n)))
            trees.write_image(tmp_path / "data" / "masks" / split / f"{n}_mask.png", colours)  # lossless PNG
    cfg = compose("folder", tmp_path, ["dataset.root=" + str(tmp_path / "data"), "dataset.num_classes=3",
                                       "dataset.mask_format=rgb", "dataset.image_suffix=.png",
                                       "dataset.mask_suffix=_mask.png"])
    cfg.dataset.class_names = ["bg", "a", "b"]
    cfg.dataset.palette = palette
    cfg.dataset.ignore_colours = [[255, 255, 255]]
    ds = build(cfg, "train")
    for i in range(len(ds)):
        item = ds[i]
        labels = trees.random_labels(f"rgbtrain{item['name']}", [0, 1, 2, 255])
        np.testing.assert_array_equal(item["mask"], labels.astype(np.int64))
    assert ds.classes == ["bg", "a", "b"]


# -- configs and the train pipeline ---------------------------------------------------------------------
@pytest.mark.parametrize("name", trees.datasets_with_trees())
def test_train_pipeline_pads_masks_with_ignore(tmp_path, name):
    trees.tree_builder(name)(tmp_path)
    cfg = compose(name, tmp_path, trees.tree_overrides(name))
    assert cfg.dataset.ignore_index == 255
    assert list(cfg.dataset.mean) == IMAGENET_MEAN and list(cfg.dataset.std) == IMAGENET_STD
    crop_h, crop_w = cfg.dataset.crop_size
    ds = instantiate(cfg.dataset.train, transform=instantiate(cfg.augmentation.train))
    item = ds[0]
    assert tuple(item["image"].shape) == (3, crop_h, crop_w) and tuple(item["mask"].shape) == (crop_h, crop_w)
    h, w = ds.load(0)[1].shape
    most_image_pixels = (2 * h + 1) * (2 * w + 1)  # the random scale is at most 2x
    mask = item["mask"].numpy()
    assert (mask == 255).sum() >= crop_h * crop_w - most_image_pixels
    assert set(np.unique(mask).tolist()) <= set(range(ds.num_classes)) | {255}
    assert cfg.dataset.num_classes == ds.num_classes == len(ds.palette)


def test_crop_sizes():
    expected = {"camvid": [360, 480], "voc": [512, 512], "voc_aug": [512, 512], "cityscapes": [512, 1024],
                "cityscapes_coarse": [512, 1024], "ade20k": [512, 512], "cocostuff164k": [512, 512],
                "cocostuff10k": [512, 512]}
    released = {n for n in config_names("dataset") if needs_files(n) and not own_data(n)}
    assert set(expected) == released, "every released dataset's training crop is checked here"
    for name, crop in expected.items():
        assert list(group_config("dataset", name, CONF).crop_size) == crop, name


def test_item_contract_with_val_pipeline(tmp_path):
    trees.build_cityscapes_tree(tmp_path)
    cfg = compose("cityscapes", tmp_path)
    ds = instantiate(cfg.dataset.val, transform=instantiate(cfg.augmentation.val))
    item = ds[0]
    raw = ds.load(0)
    assert item["image"].dtype.is_floating_point and tuple(item["image"].shape) == (3, *trees.SIZE)
    np.testing.assert_array_equal(item["mask"].numpy(), raw[1])
    expected = (raw[0][..., 0] / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    np.testing.assert_allclose(item["image"][0].numpy(), expected, atol=1e-5)
