"""ADE20K (SceneParsing / ADEChallengeData2016): 150 classes, 0 = "other" -> ignore, k -> k-1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX
from segsuite.data.datasets.folder import ImageMaskDataset

ADE20K_TREE = """  <root> = ADEChallengeData2016/
    images/{training,validation}/ADE_<split>_<n>.jpg          20,210 / 2,000
    annotations/{training,validation}/ADE_<split>_<n>.png     grey PNG: 0 = other, 1..150 = classes"""
ADE20K_DOWNLOAD = ("http://sceneparsing.csail.mit.edu/ "
                   "(http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip)")
NUM_CLASSES = 150
SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


class ADE20K(ImageMaskDataset):
    """ADE20K scene parsing: label k in 1..150 becomes train id k-1; 0 ("other") becomes 255.

    Args:
        root: the ADEChallengeData2016 folder.
        split: "train"/"training" or "val"/"validation".
        class_names: the 150 class names (train id order).
        palette: 150 x 3 RGB colours (None: generated).
    """
    official_image_size = (512, 683)  # shorter side 512 in ADEChallengeData2016 (typical)
    tree, download = ADE20K_TREE, ADE20K_DOWNLOAD
    raw_label_values = tuple(range(NUM_CLASSES + 1))  # 0 other, 1..150 classes
    label_encoding = "png_grey"


    def __init__(self, root: str | Path, split: str = "train", class_names: Sequence[str] = (),
                 palette: Sequence[Sequence[int]] | None = None, **kwargs) -> None:
        super().__init__(class_names, palette, expected_classes=NUM_CLASSES, **kwargs)
        if split not in SPLITS:
            raise ValueError(f"ADE20K: split={split!r}; expected one of {sorted(SPLITS)}")
        folder = SPLITS[split]
        root = dataio.require_dir(Path(root), "ADE20K", ADE20K_TREE, ADE20K_DOWNLOAD)
        image_dir = dataio.require_dir(root / "images" / folder, "ADE20K", ADE20K_TREE, ADE20K_DOWNLOAD)
        mask_dir = dataio.require_dir(root / "annotations" / folder, "ADE20K", ADE20K_TREE, ADE20K_DOWNLOAD)
        self.split = split
        self.samples = dataio.pair_files(dataio.index_files(image_dir, ".jpg"), dataio.index_files(mask_dir, ".png"),
                                         "ADE20K", self.skip_bad, left_out=self.left_out)
        self.lut = dataio.build_lut({0: IGNORE_INDEX} | {k: k - 1 for k in range(1, NUM_CLASSES + 1)})

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)
