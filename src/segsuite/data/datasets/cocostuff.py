"""COCO-Stuff: 164k (stuffthingmaps PNGs) and 10k (.mat) partitions, 171 classes in use or raw 182.

COCO ids run 1..182 (things 1..91, stuff 92..182); 11 thing ids were never annotated, so the
standard label set has 171 classes (the used ids in increasing order). The raw set keeps all 182
(id k -> class k-1; the 11 unused classes then never occur).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX
from segsuite.data.datasets.folder import ImageMaskDataset

COCO_STUFF_164K_TREE = """  <root>/
    images/{train2017,val2017}/<12-digit id>.jpg          118,287 / 5,000 (COCO 2017 images)
    annotations/{train2017,val2017}/<12-digit id>.png     stuffthingmaps: COCO id - 1 (0..181), 255 = unlabeled"""
COCO_STUFF_164K_DOWNLOAD = ("https://github.com/nightrome/cocostuff (train2017.zip, val2017.zip from "
                            "images.cocodataset.org and stuffthingmaps_trainval2017.zip)")
COCO_STUFF_10K_TREE = """  <root>/                                   (cocostuff-10k-v1.1)
    images/<name>.jpg
    annotations/<name>.mat                    variable S: COCO id 1..182, 0 = unlabeled
    imageLists/{train,test}.txt               9,000 / 1,000 names"""
COCO_STUFF_10K_DOWNLOAD = "https://github.com/nightrome/cocostuff10k (cocostuff-10k-v1.1.zip)"
NUM_IDS = 182
UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
USED_IDS = tuple(i for i in range(1, NUM_IDS + 1) if i not in UNUSED_IDS)


def coco_classes(class_names: Sequence[str], label_set: int, unused_ids: Sequence[int]) -> tuple[list[str], list[int]]:
    """(class names, COCO ids) of the chosen label set: 182 (all ids) or 171 (unused ids removed)."""
    if len(class_names) != NUM_IDS:
        raise ValueError(f"COCO-Stuff: class_names must list all {NUM_IDS} COCO ids 1..182, got {len(class_names)}")
    if label_set == NUM_IDS:
        return list(class_names), list(range(1, NUM_IDS + 1))
    if label_set == NUM_IDS - len(unused_ids):
        ids = [i for i in range(1, NUM_IDS + 1) if i not in set(unused_ids)]
        return [class_names[i - 1] for i in ids], ids
    raise ValueError(f"COCO-Stuff: label_set={label_set}; expected 171 (classes in use) or 182 (raw COCO ids)")


def coco_lut(coco_ids: Sequence[int], raw_of_id: int, raw_unlabeled: int) -> np.ndarray:
    """Table raw value -> class: raw = COCO id + `raw_of_id`; `raw_unlabeled` and unused ids -> 255."""
    mapping = {i + raw_of_id: IGNORE_INDEX for i in range(1, NUM_IDS + 1)}
    mapping.update({coco_id + raw_of_id: k for k, coco_id in enumerate(coco_ids)})
    mapping[raw_unlabeled] = IGNORE_INDEX
    return dataio.build_lut(mapping)


class _CocoStuff(ImageMaskDataset):
    official_image_size = (480, 640)  # typical COCO image

    def __init__(self, class_names: Sequence[str], label_set: int, unused_ids: Sequence[int],
                 palette: Sequence[Sequence[int]] | None, **kwargs) -> None:
        names, self.coco_ids = coco_classes(class_names, int(label_set), unused_ids)
        super().__init__(names, palette, **kwargs)


class CocoStuff164k(_CocoStuff):
    """COCO-Stuff 164k: COCO 2017 images with stuffthingmaps PNG labels (value = COCO id - 1).

    Args:
        root: folder with images/ and annotations/.
        split: "train2017" or "val2017" (also "train"/"val").
        class_names: the 182 names of COCO ids 1..182 (unused ids included).
        label_set: 171 (standard: unused ids removed) or 182 (raw ids).
        unused_ids: the COCO ids without annotations (removed in the 171 set).
        palette: C x 3 RGB colours for the chosen label set (None: generated).
    """
    tree, download = COCO_STUFF_164K_TREE, COCO_STUFF_164K_DOWNLOAD
    raw_label_values = (*(i - 1 for i in USED_IDS), IGNORE_INDEX)  # stuffthingmaps: COCO id - 1, 255 unlabeled
    label_encoding = "png_grey"

    def __init__(self, root: str | Path, split: str = "train2017", class_names: Sequence[str] = (),
                 label_set: int = 171, unused_ids: Sequence[int] = UNUSED_IDS,
                 palette: Sequence[Sequence[int]] | None = None, **kwargs) -> None:
        super().__init__(class_names, label_set, unused_ids, palette, **kwargs)
        folder = {"train": "train2017", "val": "val2017"}.get(split, split)
        args = ("COCO-Stuff 164k", COCO_STUFF_164K_TREE, COCO_STUFF_164K_DOWNLOAD)
        root = dataio.require_dir(Path(root), *args)
        image_dir = dataio.require_dir(root / "images" / folder, *args)
        mask_dir = dataio.require_dir(root / "annotations" / folder, *args)
        self.split = folder
        self.samples = dataio.pair_files(dataio.index_files(image_dir, ".jpg"), dataio.index_files(mask_dir, ".png"),
                                         "COCO-Stuff 164k", self.skip_bad, left_out=self.left_out)
        self.lut = coco_lut(self.coco_ids, raw_of_id=-1, raw_unlabeled=255)

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)


class CocoStuff10k(_CocoStuff):
    """COCO-Stuff 10k (v1.1): JPEG images, `.mat` labels (variable `S`: COCO id, 0 = unlabeled).

    Args:
        root: folder with images/, annotations/ and imageLists/.
        split: "train" or "test" (imageLists/<split>.txt).
        class_names, label_set, unused_ids, palette: as for `CocoStuff164k`.
    """
    tree, download = COCO_STUFF_10K_TREE, COCO_STUFF_10K_DOWNLOAD
    raw_label_values = (0, *USED_IDS)  # COCO id, 0 unlabeled
    label_encoding = "mat_S"

    def __init__(self, root: str | Path, split: str = "train", class_names: Sequence[str] = (),
                 label_set: int = 171, unused_ids: Sequence[int] = UNUSED_IDS,
                 palette: Sequence[Sequence[int]] | None = None, **kwargs) -> None:
        super().__init__(class_names, label_set, unused_ids, palette, **kwargs)
        args = ("COCO-Stuff 10k", COCO_STUFF_10K_TREE, COCO_STUFF_10K_DOWNLOAD)
        root = dataio.require_dir(Path(root), *args)
        list_file = dataio.require_file(root / "imageLists" / f"{split}.txt", *args)
        image_dir = dataio.require_dir(root / "images", *args)
        mask_dir = dataio.require_dir(root / "annotations", *args)
        self.split = split
        self.samples = dataio.pair_files(dataio.index_files(image_dir, ".jpg"), dataio.index_files(mask_dir, ".mat"),
                                         "COCO-Stuff 10k", self.skip_bad, names=dataio.read_id_list(list_file),
                                         left_out=self.left_out)
        self.lut = coco_lut(self.coco_ids, raw_of_id=0, raw_unlabeled=0)

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_mat_labels(path, "S"), self.lut, path)
