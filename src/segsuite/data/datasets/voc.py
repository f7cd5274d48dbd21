"""Pascal VOC 2012 segmentation (and the SBD-augmented train_aug set): palette-index PNG labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX
from segsuite.data.datasets.folder import ImageMaskDataset
from segsuite.utils.docs import doc_path

VOC_TREE = """  <root> = VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png              palette PNG: index = class 0..20, 255 = border
    SegmentationClassAug/<id>.png           (voc_aug) made by segsuite-prepare-voc-aug
    ImageSets/Segmentation/{train,val,trainval}.txt   (+ train_aug.txt for voc_aug)"""
VOC_DOWNLOAD = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); for voc_aug also SBD "
    "http://home.bharathh.info/pubs/codes/SBD/download.html then "
    "`segsuite-prepare-voc-aug --sbd <benchmark_RELEASE> --voc <VOC2012>` (python -m segsuite.tools.prepare_voc_aug; "
    f"{doc_path('datasets.md#pascal-voc-2012-and-voc-aug')})"
)
NUM_CLASSES = 21


class VOCSegmentation(ImageMaskDataset):
    """Pascal VOC 2012: ids from `ImageSets/Segmentation/<split>.txt`, images `JPEGImages/<id>.jpg`,
    labels `<mask_dir>/<id>.png` (class index per pixel, 255 = object border / ignore).

    Args:
        root: the VOC2012 folder (VOCdevkit/VOC2012).
        split: list name under ImageSets/Segmentation: "train", "val", "trainval" or "train_aug".
        mask_dir: "SegmentationClass" (official) or "SegmentationClassAug" (SBD-augmented).
        class_names: the 21 class names (index = label value).
        palette: 21 x 3 RGB colours.
    """
    official_image_size = (375, 500)  # most VOC images: 500 x 375 or 375 x 500
    tree, download = VOC_TREE, VOC_DOWNLOAD
    raw_label_values = (*range(NUM_CLASSES), IGNORE_INDEX)  # 255: object borders
    label_encoding = "png_palette"  # SegmentationClassAug/ (voc_aug) holds grey PNGs: read alike


    def __init__(self, root: str | Path, split: str = "train", mask_dir: str = "SegmentationClass",
                 class_names: Sequence[str] = (), palette: Sequence[Sequence[int]] | None = None,
                 **kwargs) -> None:
        super().__init__(class_names, palette, expected_classes=NUM_CLASSES, **kwargs)
        root = dataio.require_dir(Path(root), "VOC", VOC_TREE, VOC_DOWNLOAD)
        list_file = dataio.require_file(root / "ImageSets" / "Segmentation" / f"{split}.txt", "VOC",
                                        VOC_TREE, VOC_DOWNLOAD)
        image_dir = dataio.require_dir(root / "JPEGImages", "VOC", VOC_TREE, VOC_DOWNLOAD)
        label_dir = dataio.require_dir(root / mask_dir, "VOC", VOC_TREE, VOC_DOWNLOAD)
        self.split = split
        self.samples = dataio.pair_files(dataio.index_files(image_dir, ".jpg"), dataio.index_files(label_dir, ".png"),
                                         "VOC", self.skip_bad, names=dataio.read_id_list(list_file),
                                         left_out=self.left_out)
        self.lut = dataio.build_lut({k: k for k in range(NUM_CLASSES)} | {IGNORE_INDEX: IGNORE_INDEX})

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)
