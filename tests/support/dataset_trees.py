"""Builders of miniature dataset trees in the official layouts, file names and encodings (test side).

Each dataset class has one builder, registered with `@tree_of(<class>)`: `build_<name>_tree(root)`
writes a few tiny images under `root` and returns the value for `dataset.root=`; every dataset config
that builds the class (`voc` and `voc_aug`, `cityscapes` and `cityscapes_coarse`) uses it, found by
config name with `tree_builder(name)`. Labels are random over the raw values the class declares
(`raw_label_values`, including void / unlabeled values) in the encoding it declares (`label_encoding`),
so tests can check the loaders' mapping pixel by pixel. A tree also works as `dataset.root` for
`python -m segsuite.train dataset=<name> ... debug=fdr` (with `tree_overrides(name)`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from segsuite import catalog
from segsuite.data.datasets import (
    ADE20K,
    CamVid,
    Cityscapes,
    CocoStuff10k,
    CocoStuff164k,
    FolderDataset,
    VOCSegmentation,
)
from segsuite.tools.prepare_voc_aug import prepare as prepare_voc_aug

SIZE = (12, 16)  # H, W of the tiny images

TreeBuilder = Callable[[Path], Path]
TREES: dict[type, tuple[TreeBuilder, tuple[str, ...]]] = {}  # dataset class -> (builder, overrides)


def tree_of(dataset_class: type, overrides: Sequence[str] = ()) -> Callable[[TreeBuilder], TreeBuilder]:
    """Register the decorated builder as the miniature tree of `dataset_class`; `overrides` are what a
    run on the tree needs besides `dataset.root=` (your own data: its class count)."""

    def register(builder: TreeBuilder) -> TreeBuilder:
        TREES[dataset_class] = (builder, tuple(overrides))
        return builder

    return register


def tree_builder(name: str) -> TreeBuilder | None:
    """The builder of the miniature tree of dataset config `name` (of the class it builds), or None."""
    entry = TREES.get(catalog.config_class("dataset", name))
    return None if entry is None else entry[0]


def tree_overrides(name: str) -> list[str]:
    """Overrides a run on dataset `name`'s miniature tree needs besides `dataset.root=`."""
    entry = TREES.get(catalog.config_class("dataset", name))
    return [] if entry is None else list(entry[1])


def datasets_with_trees() -> list[str]:
    """The dataset configs that have a miniature tree, in catalog order."""
    return [n for n in catalog.config_names("dataset") if tree_builder(n) is not None]


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def random_labels(name: str, values: Sequence[int], size: tuple[int, int] = SIZE) -> np.ndarray:
    return rng_for("labels/" + name).choice(np.asarray(values, dtype=np.uint16), size=size).astype(np.uint8)


def random_image(name: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    return rng_for("image/" + name).integers(0, 256, (*size, 3), dtype=np.uint8)


def write_image(path: Path, image_rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))


def write_grey_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def voc_colour_map(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (bits of the class index spread over R, G, B from the top bit)."""
    colours = np.zeros((n, 3), dtype=np.uint8)
    for k in range(n):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r, g, b = r | (c & 1) << shift, g | (c >> 1 & 1) << shift, b | (c >> 2 & 1) << shift
            c >>= 3
        colours[k] = (r, g, b)
    return colours


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_colour_map().flatten().tolist())
    image.save(path)


def write_mat(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"S": labels.astype(np.uint16)}, do_compression=True)


LABEL_WRITERS = {"png_grey": write_grey_png, "png_palette": write_palette_png, "mat_S": write_mat}


def write_labels(path: Path, labels: np.ndarray, encoding: str) -> None:
    """Raw label values in a dataset class's `label_encoding`."""
    LABEL_WRITERS[encoding](path, labels)


def write_raw_labels(dataset_class: type, path: Path, name: str, size: tuple[int, int] = SIZE) -> None:
    """Random labels over the class's `raw_label_values`, in its `label_encoding`, seeded by `name`."""
    write_labels(path, random_labels(name, dataset_class.raw_label_values, size), dataset_class.label_encoding)


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# -- CamVid ---------------------------------------------------------------------------------------
CAMVID_SPLITS = {"train": ["0001TP_006690", "0001TP_006720", "0016E5_00390", "0016E5_00420"],
                 "val": ["0016E5_07959", "0016E5_07961"], "test": ["0001TP_008550", "Seq05VD_f00000"]}


@tree_of(CamVid)
def build_camvid_tree(root: Path) -> Path:
    base = Path(root) / "CamVid"
    for split, names in CAMVID_SPLITS.items():
        for name in names:
            write_image(base / split / f"{name}.png", random_image(name))
            write_raw_labels(CamVid, base / f"{split}annot" / f"{name}.png", name)
    return base


# -- Pascal VOC -----------------------------------------------------------------------------------
VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000008", "2009_000012"]
VOC_VAL = ["2007_000033", "2010_000002"]
SBD_TRAIN = ["2008_000002", "2008_000008", "2007_000033"]  # overlaps VOC train and VOC val
SBD_VAL = ["2008_000003", "2011_000001"]


def voc_size(image_id: str) -> tuple[int, int]:
    """VOC images differ in size; vary them a little."""
    return (SIZE[0] + zlib.crc32(image_id.encode()) % 3, SIZE[1])


def build_voc_tree(root: Path) -> Path:
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for image_id in VOC_TRAIN + VOC_VAL:
        write_image(base / "JPEGImages" / f"{image_id}.jpg", random_image(image_id, voc_size(image_id)))
        write_raw_labels(VOCSegmentation, base / "SegmentationClass" / f"{image_id}.png", image_id,
                         voc_size(image_id))
    lists = base / "ImageSets" / "Segmentation"
    write_list(lists / "train.txt", VOC_TRAIN)
    write_list(lists / "val.txt", VOC_VAL)
    write_list(lists / "trainval.txt", sorted(VOC_TRAIN + VOC_VAL))
    return base


def build_sbd_tree(root: Path) -> Path:
    """SBD `benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt}` (+ the JPEGs in the VOC tree)."""
    base = Path(root) / "benchmark_RELEASE"
    for image_id in SBD_TRAIN + SBD_VAL:
        labels = random_labels("sbd/" + image_id, list(range(21)), voc_size(image_id))  # SBD has no 255
        gt = {"Segmentation": labels, "Boundaries": np.zeros(21, dtype=object),
              "CategoriesPresent": np.unique(labels[labels > 0]).astype(np.uint8)}
        (base / "dataset" / "cls").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(base / "dataset" / "cls" / f"{image_id}.mat", {"GTcls": gt})
    write_list(base / "dataset" / "train.txt", SBD_TRAIN)
    write_list(base / "dataset" / "val.txt", SBD_VAL)
    return base


@tree_of(VOCSegmentation)  # the tree of voc and voc_aug
def build_voc_aug_tree(root: Path) -> Path:
    """VOC + SBD, then `segsuite.tools.prepare_voc_aug` (SegmentationClassAug/, train_aug.txt)."""
    voc = build_voc_tree(root)
    sbd = build_sbd_tree(root)
    for image_id in SBD_TRAIN + SBD_VAL:  # SBD images are VOC2011 images, present in VOC2012 JPEGImages
        path = voc / "JPEGImages" / f"{image_id}.jpg"
        if not path.exists():
            write_image(path, random_image(image_id, voc_size(image_id)))
    prepare_voc_aug(sbd, voc, progress=False)
    return voc


# -- Cityscapes -----------------------------------------------------------------------------------
CITYSCAPES_FRAMES = {
    "train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313", "bochum_000000_001097"],
    "val": ["frankfurt_000000_000294", "lindau_000000_000019"],
    "train_extra": ["augsburg_000000_000000", "bad-honnef_000000_000000"],
}


@tree_of(Cityscapes)  # the tree of cityscapes and cityscapes_coarse
def build_cityscapes_tree(root: Path) -> Path:
    """leftImg8bit/ + gtFine/ (train, val) + gtCoarse/ (train, val, train_extra), with the
    colour/instance/polygon files of the official release next to the labelIds."""
    base = Path(root) / "cityscapes"
    for split, frames in CITYSCAPES_FRAMES.items():
        for frame in frames:
            city = frame.rsplit("_", 2)[0]
            write_image(base / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", random_image(frame))
            annotations = ("gtCoarse",) if split == "train_extra" else ("gtFine", "gtCoarse")
            for annotation in annotations:
                folder = base / annotation / split / city
                write_raw_labels(Cityscapes, folder / f"{frame}_{annotation}_labelIds.png", f"{annotation}/{frame}")
                # distractors the loader must not pick up
                write_image(folder / f"{frame}_{annotation}_color.png", random_image("c" + frame))
                write_grey_png(folder / f"{frame}_{annotation}_instanceIds.png",
                               random_labels("i" + frame, [0, 26, 255]))
                (folder / f"{frame}_{annotation}_polygons.json").write_text(json.dumps({"objects": []}))
    return base


# -- ADE20K ---------------------------------------------------------------------------------------
@tree_of(ADE20K)
def build_ade20k_tree(root: Path) -> Path:
    base = Path(root) / "ADEChallengeData2016"
    for folder, tag, count in (("training", "train", 4), ("validation", "val", 2)):
        for n in range(1, count + 1):
            name = f"ADE_{tag}_{n:08d}"
            write_image(base / "images" / folder / f"{name}.jpg", random_image(name))
            write_raw_labels(ADE20K, base / "annotations" / folder / f"{name}.png", name)
    return base


# -- COCO-Stuff -------------------------------------------------------------------------------------
COCO164K_IDS = {"train2017": [9, 25, 30, 34], "val2017": [139, 285]}
COCO10K_SPLITS = {"train": ["COCO_train2014_000000000077", "COCO_train2014_000000000113",
                            "COCO_train2014_000000000149", "COCO_train2014_000000000321"],
                  "test": ["COCO_train2014_000000000260", "COCO_train2014_000000000382"]}


@tree_of(CocoStuff164k)
def build_cocostuff164k_tree(root: Path) -> Path:
    base = Path(root) / "cocostuff"
    for split, ids in COCO164K_IDS.items():
        for image_id in ids:
            name = f"{image_id:012d}"
            write_image(base / "images" / split / f"{name}.jpg", random_image(name))
            write_raw_labels(CocoStuff164k, base / "annotations" / split / f"{name}.png", name)
    return base


@tree_of(CocoStuff10k)
def build_cocostuff10k_tree(root: Path) -> Path:
    base = Path(root) / "cocostuff-10k-v1.1"
    for split, names in COCO10K_SPLITS.items():
        for name in names:
            write_image(base / "images" / f"{name}.jpg", random_image(name))
            write_raw_labels(CocoStuff10k, base / "annotations" / f"{name}.mat", name)
        write_list(base / "imageLists" / f"{split}.txt", names)
    write_list(base / "imageLists" / "all.txt", [name for names in COCO10K_SPLITS.values() for name in names])
    return base


# -- your own data ----------------------------------------------------------------------------------
FOLDER_CLASSES = ["background", "crack", "rust"]
FOLDER_RAW = [0, 1, 2, 255]  # class ids and ignore: your own data declares no raw values of its own


@tree_of(FolderDataset, overrides=[f"dataset.num_classes={len(FOLDER_CLASSES)}"])  # the class count is yours
def build_folder_tree(root: Path) -> Path:
    base = Path(root) / "folder"
    for split, count in (("train", 4), ("val", 2)):
        for n in range(count):
            name = f"{split}_{n:03d}"
            write_image(base / "images" / split / f"{name}.jpg", random_image(name))
            write_labels(base / "masks" / split / f"{name}.png", random_labels(name, FOLDER_RAW),
                         FolderDataset.label_encoding)
    (base / "classes.txt").write_text("# one class per line\n" + "\n".join(FOLDER_CLASSES) + "\n")
    return base


# -- photo-sized files for timing (benchmark, speed tests) ------------------------------------------
def photo_like(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth colour gradients plus a few flat shapes and mild noise (compresses like a photo)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, f = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(2, 6)
        image[..., c] = 128 + 60 * np.sin(f * (a * xx / w + b * yy / h) * np.pi)
    for _ in range(6):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        image[y0:y0 + h // 4, x0:x0 + w // 4] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def region_labels(rng: np.random.Generator, size: tuple[int, int], values: list[int]) -> np.ndarray:
    """Labels in large rectangular regions drawn from `values`."""
    h, w = size
    labels = np.full(size, values[0], np.uint8)
    for _ in range(12):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        labels[y0:y0 + rng.integers(h // 8, h // 2), x0:x0 + rng.integers(w // 8, w // 2)] = rng.choice(values)
    return labels


def rewrite_at_size(dataset, size: tuple[int, int]) -> None:
    """Overwrite every sample's image and label file in place, same names and encodings, at `size`; labels
    over the raw values the dataset's class declares (your own data: its class ids and the ignore index)."""
    values = type(dataset).raw_label_values or [*range(dataset.num_classes), dataset.ignore_index]
    rng = np.random.default_rng(0)
    for sample in dataset.samples:
        write_image(sample.image, photo_like(rng, size))
        labels = region_labels(rng, size, list(values))
        if sample.mask.suffix == ".mat":
            write_mat(sample.mask, labels)
        elif Image.open(sample.mask).mode == "P":
            write_palette_png(sample.mask, labels)
        else:
            write_grey_png(sample.mask, labels)


def compose(name: str, data_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """{paths, dataset, augmentation} as Hydra would compose them for `dataset=<name>` (hand-made `paths`)."""
    cfg = OmegaConf.create({"paths": {"data_dir": str(data_dir)},
                            "dataset": catalog.group_config("dataset", name),
                            "augmentation": catalog.group_config("augmentation", "default")})
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
