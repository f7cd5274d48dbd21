"""Image/mask pair datasets: the shared base of the file datasets, and "your own data" in two folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX, DatasetError, SegDataset
from segsuite.utils.docs import doc_path


def generated_palette(num_classes: int) -> np.ndarray:
    """Distinct colours by the Pascal VOC bit-interleaving scheme (class 0 black)."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for k in range(num_classes):
        code, r, g, b = k, 0, 0, 0
        for bit in range(7, -1, -1):
            r |= ((code >> 0) & 1) << bit
            g |= ((code >> 1) & 1) << bit
            b |= ((code >> 2) & 1) << bit
            code >>= 3
        palette[k] = (r, g, b)
    return palette


def as_palette(palette: Sequence[Sequence[int]] | None, num_classes: int, where: str) -> np.ndarray:
    """`palette` as a C x 3 uint8 array (None: generated colours); raise if its shape is wrong."""
    if palette is None:
        return generated_palette(num_classes)
    array = np.array([[int(v) for v in colour] for colour in palette]).reshape(-1, 3)
    if array.shape != (num_classes, 3) or array.min() < 0 or array.max() > 255:
        raise ValueError(f"{where}: palette must be {num_classes} x 3 RGB values in 0..255, got shape {array.shape}")
    return array.astype(np.uint8)


class ImageMaskDataset(SegDataset):
    """Base of the file datasets: a list of `Sample`s, an image reader and a label decoder.

    Subclasses build `self.samples` and implement `read_mask(path) -> int64 train ids`.
    """

    samples: list[dataio.Sample]

    def __init__(self, class_names: Sequence[str], palette: Sequence[Sequence[int]] | None,
                 expected_classes: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classes = [str(c) for c in class_names]
        if expected_classes is not None and len(self.classes) != expected_classes:
            raise ValueError(
                f"{type(self).__name__}: {len(self.classes)} class names but {expected_classes} classes expected "
                f"(label encoding / dataset.num_classes); make the class list and num_classes agree."
            )
        self.palette = as_palette(palette, len(self.classes), type(self).__name__)
        self.samples = []

    def __len__(self) -> int:
        return len(self.samples)

    def read_mask(self, path: Path) -> np.ndarray:  # pragma: no cover - abstract
        """Decode the label file at `path` to int64 train ids."""
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        sample = self.samples[index]
        image, mask = dataio.read_image(sample.image), self.read_mask(sample.mask)
        if image.shape[:2] != mask.shape[:2]:
            raise DatasetError(
                f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} (width x height) but its image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]}; they must match."
            )
        return image, mask, sample.name


FOLDER_TREE = """  <root>/
    images/{train,val}/<name><image_suffix>     e.g. images/train/0001.jpg
    masks/{train,val}/<name><mask_suffix>       e.g. masks/train/0001.png (same name)"""


def read_class_names(path: Path) -> list[str]:
    """Class names from a text file: one per line, blank lines and `#` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class names file {path} not found; write one class name per line.")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


class FolderDataset(ImageMaskDataset):
    """Your own data: images in one folder, masks (same file names, own suffix) in another.

    Args:
        image_dir: folder of images (RGB; any format OpenCV reads).
        mask_dir: folder of masks; `<name><mask_suffix>` for every `<name><image_suffix>`.
        image_suffix / mask_suffix: file endings, e.g. ".jpg" and ".png" (or "_mask.png").
        class_names: list of class names (index = class id), or None to read `class_names_file`.
        class_names_file: text file with one class name per line (used if class_names is None).
        palette: C x 3 RGB colours (None: generated); required for mask_format="rgb".
        mask_format: "index" (single-channel PNG of class ids, ignore_index = ignore) or "rgb"
            (colour-coded masks mapped through `palette`).
        ignore_colours: colours of an rgb mask that mean "ignore" (e.g. [[0, 0, 0]] for void).
        recursive: also look in sub-folders (names then include the relative folder).
        expected_classes: number of classes the config declares (checked against the names).
    """
    tree, download = FOLDER_TREE, f"your own data (see {doc_path('datasets.md#your-own-data')})"
    label_encoding = "png_grey"  # mask_format=index (the default); class ids 0..C-1 and 255


    def __init__(self, image_dir: str | Path, mask_dir: str | Path, image_suffix: str = ".jpg",
                 mask_suffix: str = ".png", class_names: Sequence[str] | None = None,
                 class_names_file: str | Path | None = None, palette: Sequence[Sequence[int]] | None = None,
                 mask_format: str = "index", ignore_colours: Sequence[Sequence[int]] = (),
                 recursive: bool = False, expected_classes: int | None = None, **kwargs) -> None:
        if class_names is None:
            if class_names_file is None:
                raise ValueError("FolderDataset: give class_names (a list) or class_names_file (one name per line)")
            class_names = read_class_names(Path(class_names_file))
        if mask_format not in ("index", "rgb"):
            raise ValueError(f"FolderDataset: mask_format={mask_format!r}; expected 'index' or 'rgb'")
        if mask_format == "rgb" and palette is None:
            raise ValueError("FolderDataset: mask_format='rgb' needs `palette` (one RGB colour per class)")
        super().__init__(class_names, palette, expected_classes=expected_classes, **kwargs)
        if len(self.classes) > IGNORE_INDEX:
            raise ValueError(f"FolderDataset: at most {IGNORE_INDEX} classes (255 is the ignore index)")
        self.mask_format = mask_format
        self.ignore_colours = [tuple(int(v) for v in c) for c in ignore_colours]
        image_dir = dataio.require_dir(Path(image_dir), "folder", self.tree, self.download)
        mask_dir = dataio.require_dir(Path(mask_dir), "folder", self.tree, self.download)
        images = dataio.index_files(image_dir, image_suffix, recursive)
        masks = dataio.index_files(mask_dir, mask_suffix, recursive)
        if not images:
            raise DatasetError(f"folder: no '*{image_suffix}' images in {image_dir}; check image_suffix.")
        self.samples = dataio.pair_files(images, masks, "folder", self.skip_bad, left_out=self.left_out)
        self.lut = dataio.build_lut({**{k: k for k in range(len(self.classes))}, IGNORE_INDEX: IGNORE_INDEX})

    def read_mask(self, path: Path) -> np.ndarray:
        if self.mask_format == "rgb":
            rgb = dataio.read_colour_mask(path)
            return dataio.colour_to_index(rgb, self.palette, path, self.ignore_colours, self.ignore_index)
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)
