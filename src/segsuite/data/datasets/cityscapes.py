"""Cityscapes: official labelIds (0..33) -> 19 train ids with one lookup table; fine, coarse or both."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX
from segsuite.data.datasets.folder import ImageMaskDataset

CITYSCAPES_TREE = """  <root>/
    leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png          2975 / 500 / 1525
    gtCoarse/{train,val,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png   (train_extra: 19,998)"""
CITYSCAPES_DOWNLOAD = ("https://www.cityscapes-dataset.com/downloads/ (leftImg8bit_trainvaltest.zip, "
                       "gtFine_trainvaltest.zip; coarse: gtCoarse.zip, leftImg8bit_trainextra.zip)")
NUM_CLASSES = 19
# Official labelId of each of the 19 evaluated classes, in trainId order (cityscapesScripts labels.py);
# every other labelId 0..33 (unlabeled, ego vehicle, ..., license plate) is ignored.
LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NUM_LABEL_IDS = 34
ANNOTATIONS = ("gtFine", "gtCoarse")


def label_id_lut() -> np.ndarray:
    """256-entry table labelId -> trainId: the 19 classes, other ids 0..33 -> 255, >33 invalid."""
    mapping = {label_id: IGNORE_INDEX for label_id in range(NUM_LABEL_IDS)}
    mapping.update({label_id: train_id for train_id, label_id in enumerate(LABEL_IDS)})
    return dataio.build_lut(mapping)


class Cityscapes(ImageMaskDataset):
    """Cityscapes from one or more (split, annotation) sources, e.g. [[train, gtFine]] or
    [[train, gtCoarse], [train_extra, gtCoarse]] or a fine+coarse mix.

    Args:
        root: the folder holding leftImg8bit/, gtFine/ and (optionally) gtCoarse/.
        sources: list of [split, annotation] pairs; annotation "gtFine" or "gtCoarse".
        class_names: the 19 class names (trainId order).
        palette: 19 x 3 RGB colours.
    """
    official_image_size = (1024, 2048)
    tree, download = CITYSCAPES_TREE, CITYSCAPES_DOWNLOAD
    raw_label_values = tuple(range(NUM_LABEL_IDS))  # official labelIds
    label_encoding = "png_grey"


    def __init__(self, root: str | Path, sources: Sequence[Sequence[str]] = (("train", "gtFine"),),
                 class_names: Sequence[str] = (), palette: Sequence[Sequence[int]] | None = None,
                 **kwargs) -> None:
        super().__init__(class_names, palette, expected_classes=NUM_CLASSES, **kwargs)
        root = dataio.require_dir(Path(root), "Cityscapes", CITYSCAPES_TREE, CITYSCAPES_DOWNLOAD)
        self.sources = [(str(split), str(annotation)) for split, annotation in sources]
        for split, annotation in self.sources:
            if annotation not in ANNOTATIONS:
                raise ValueError(f"Cityscapes: annotation {annotation!r} in sources; expected one of {ANNOTATIONS}")
            self.samples += self._source_samples(root, split, annotation)
        self.lut = label_id_lut()

    def _source_samples(self, root: Path, split: str, annotation: str) -> list[dataio.Sample]:
        where = f"Cityscapes {split}/{annotation}"
        image_dir = dataio.require_dir(root / "leftImg8bit" / split, where, CITYSCAPES_TREE, CITYSCAPES_DOWNLOAD)
        label_dir = dataio.require_dir(root / annotation / split, where, CITYSCAPES_TREE, CITYSCAPES_DOWNLOAD)
        images = dataio.index_files(image_dir, "_leftImg8bit.png", recursive=True)
        labels = dataio.index_files(label_dir, f"_{annotation}_labelIds.png", recursive=True)
        samples = dataio.pair_files(images, labels, where, self.skip_bad, left_out=self.left_out)
        return [dataio.Sample(s.image, s.mask, Path(s.name).name) for s in samples]

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)
