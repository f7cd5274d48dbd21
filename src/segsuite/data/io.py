"""Reading images and label files, mapping raw labels to train ids, pairing files — with clear errors.

Every failure raises `DatasetError` naming the file and what was found, so `SegDataset.skip_bad`
can skip it. Decoding uses OpenCV (fastest here) except for palette PNGs, which OpenCV expands to
colours: those go through PIL, whose mode-"P" arrays are the palette indices (= class ids).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segsuite.data.datasets.base import IGNORE_INDEX, DatasetError
from segsuite.data.jpeg import jpeg_stream_problem

log = logging.getLogger(__name__)

INVALID = -1  # LUT entry for raw values that no class or ignore label corresponds to
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3  # IHDR colour type of palette-indexed PNGs
_JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class Sample:
    """One image/mask pair of a dataset."""

    image: Path
    mask: Path
    name: str


# -- reading ----------------------------------------------------------------------------------------
def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing or unreadable file (a symbolic link loop or a broken link too)
    raises `DatasetError`."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file ({err.strerror or err}){_link_problem(Path(path), err)}.") \
            from err


def _link_problem(path: Path, err: OSError) -> str:
    """What is wrong with `path` when it is a symbolic link that cannot be followed ('' otherwise)."""
    if err.errno == errno.ELOOP:
        return ("; it is a symbolic link that leads back to itself (a link loop): replace the link by the file "
                "or a link to it")
    if isinstance(err, FileNotFoundError) and path.is_symlink():
        return f"; it is a symbolic link to {os.readlink(path)}, which does not exist"
    return ""


def _check_complete(data: bytes, path: Path) -> None:
    """Raise if a PNG or JPEG file is cut short or a JPEG's compressed data is damaged (decoders may
    silently return partial or wrong images)."""
    if not data:
        raise DatasetError(f"{path}: the file is empty (0 bytes); re-download or re-extract it.")
    if data.startswith(_PNG_SIGNATURE) and b"IEND" not in data[-16:]:
        raise DatasetError(f"{path}: truncated PNG (no IEND chunk at the end); re-download or re-extract it.")
    if data.startswith(b"\xff\xd8") and _JPEG_EOI not in data[-1024:]:
        raise DatasetError(f"{path}: truncated JPEG (no end-of-image marker); re-download or re-extract it.")
    if data.startswith(b"\xff\xd8") and (problem := jpeg_stream_problem(data)):
        raise DatasetError(f"{path}: damaged JPEG ({problem}); the decoder would return wrong pixels without an "
                           f"error. Re-download or re-extract it.")


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8 RGB [H, W, 3] (grey and RGBA images are converted)."""
    data = read_bytes(path)
    _check_complete(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable image ({len(data)} bytes could not be decoded).")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_png(path: Path) -> np.ndarray:
    """Decode a single-channel label PNG to its stored values [H, W] (uint8 or uint16).

    Palette PNGs (e.g. Pascal VOC) give their palette indices; grey PNGs their grey values. A
    colour (RGB) PNG raises: label files must store class indices, not colours.
    """
    data = read_bytes(path)
    _check_complete(data, path)
    if data.startswith(_PNG_SIGNATURE) and len(data) > 25 and data[25] == _PNG_PALETTE:
        try:
            with Image.open(io.BytesIO(data)) as im:
                label = np.array(im)
        except OSError as err:
            raise DatasetError(f"{path}: not a readable palette PNG ({err}).") from err
    else:
        label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise DatasetError(f"{path}: not a readable label image ({len(data)} bytes could not be decoded).")
    if label.ndim != 2:
        raise DatasetError(
            f"{path}: label image has {label.shape[2]} channels; expected a single-channel index image "
            f"(one class id per pixel). For colour-coded masks use the folder dataset with mask_format=rgb."
        )
    return label


def read_colour_mask(path: Path) -> np.ndarray:
    """Decode a colour-coded mask to uint8 RGB [H, W, 3] (palette PNGs are expanded to colours)."""
    data = read_bytes(path)
    _check_complete(data, path)
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if mask is None:
        raise DatasetError(f"{path}: not a readable colour mask ({len(data)} bytes could not be decoded).")
    return cv2.cvtColor(mask, cv2.COLOR_BGR2RGB)


def read_mat_labels(path: Path, key: str) -> np.ndarray:
    """Read the integer label array stored under `key` in a MATLAB .mat file (v5, scipy)."""
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: file not found.") from err
    except Exception as err:  # scipy raises several types for corrupt files
        raise DatasetError(f"{path}: not a readable .mat file ({type(err).__name__}: {err}).") from err
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DatasetError(f"{path}: no variable '{key}' in the .mat file (found {found}).")
    return as_integer_labels(np.asarray(content[key]), path)


def as_integer_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """Return `array` as integers; raise if it is not a 2-D array of whole numbers."""
    if array.ndim != 2:
        raise DatasetError(f"{path}: label array has shape {array.shape}; expected 2-D [H, W].")
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating) and np.array_equal(array, np.round(array)):
        return array.astype(np.int64)
    raise DatasetError(f"{path}: label array has dtype {array.dtype} with non-integer values.")


# -- label mapping ----------------------------------------------------------------------------------
def build_lut(mapping: Mapping[int, int], size: int = 256, default: int = INVALID) -> np.ndarray:
    """A lookup table raw value -> train id: `mapping` entries, every other value `default`."""
    lut = np.full(size, default, dtype=np.int64)
    for raw, train_id in mapping.items():
        lut[raw] = train_id
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    """Map raw label values to train ids with one vectorised lookup; raise on unknown values."""
    if raw.dtype != np.uint8 or len(lut) < 256:
        low, high = int(raw.min()), int(raw.max())
        if low < 0 or high >= len(lut):
            bad = np.unique(raw[(raw < 0) | (raw >= len(lut))])[:10].tolist()
            raise DatasetError(
                f"{path}: label values {bad} are outside the dataset's encoding (raw values 0..{len(lut) - 1}); "
                f"is this the right dataset and label file type?"
            )
    mask = np.take(lut, raw)
    if (lut == INVALID).any() and (mask == INVALID).any():
        bad = np.unique(raw[mask == INVALID])[:10].tolist()
        valid = np.flatnonzero(lut != INVALID).tolist()
        raise DatasetError(
            f"{path}: label values {bad} are not in the dataset's encoding (valid raw values: "
            f"{_ranges(valid)}); is this the right dataset and label file type?"
        )
    return mask


def colour_to_index(mask_rgb: np.ndarray, palette: np.ndarray, path: Path,
                    ignore_colours: Sequence[Sequence[int]] = (),
                    ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Map a colour-coded mask [H,W,3] to class indices through `palette` (C x 3).

    Colours in `ignore_colours` become `ignore_index`; any other colour raises `DatasetError`.
    """
    ignore = np.asarray(ignore_colours, dtype=np.uint8).reshape(-1, 3)
    keys = np.concatenate([_colour_codes(np.asarray(palette, dtype=np.uint8)), _colour_codes(ignore)])
    values = np.concatenate([np.arange(len(palette)), np.full(len(ignore), ignore_index)]).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    codes = _colour_codes(mask_rgb)
    pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    found = keys[pos] == codes
    if not found.all():
        bad = np.unique(codes[~found])[:10]
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in bad.tolist()]
        raise DatasetError(
            f"{path}: colours {colours} are not in the palette ({len(palette)} class colours"
            f"{' + ignore colours' if len(ignore) else ''}); add them to `palette` or `ignore_colours`."
        )
    return values[pos]


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _ranges(values: list[int]) -> str:
    """[0,1,2,5,255] -> '0..2, 5, 255'."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)


# -- layout checks and pairing ---------------------------------------------------------------------
def require_dir(path: Path, dataset: str, tree: str, download: str) -> Path:
    """Return `path` if it is a directory; else raise naming the expected tree and download page."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(
            f"{dataset}: directory {path} not found. Expected this tree under `dataset.root`:\n{tree}\n"
            f"Download: {download}\nSet `dataset.root=/path/to/it` (or paths.data_dir / SEGSUITE_DATA_DIR)."
        )
    return path


def require_file(path: Path, dataset: str, tree: str, download: str) -> Path:
    """Return `path` if it is a file; else raise naming the expected tree and download page."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{dataset}: file {path} not found. Expected this tree under `dataset.root`:\n{tree}\n"
            f"Download: {download}"
        )
    return path


def read_id_list(path: Path) -> list[str]:
    """Non-empty lines of a split list file (first whitespace-separated field of each line)."""
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def index_files(directory: Path, suffix: str, recursive: bool = False) -> dict[str, Path]:
    """{name: path} of the files in `directory` ending in `suffix`; name = file name minus suffix.

    With `recursive`, sub-folders are searched too and names are relative paths (`a/b/name`).
    Symbolic links that cannot be followed (a link loop, a link to a missing file) are listed
    too, so that reading them names the file and the problem instead of leaving it out unnoticed.
    """
    directory = Path(directory)
    found: dict[str, Path] = {}
    pending = [directory]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    is_dir, is_file = entry.is_dir(), entry.is_file() or entry.is_symlink()
                except OSError:  # ELOOP: `ln -s x.png x.png`
                    is_dir, is_file = False, True
                if is_dir and recursive:
                    pending.append(Path(entry.path))
                elif is_file and not is_dir and entry.name.endswith(suffix):
                    path = Path(entry.path)
                    found[str(path.relative_to(directory))[: -len(suffix)]] = path
    return dict(sorted(found.items()))


def pair_files(images: Mapping[str, Path], masks: Mapping[str, Path], dataset: str,
               skip_bad: bool, names: Iterable[str] | None = None,
               left_out: list[str] | None = None) -> list[Sample]:
    """Pair images and masks by name (in `names` order if given, else sorted).

    An image without its mask (or a mask without its image) raises `DatasetError` naming the
    file; with `skip_bad` it warns once per file, leaves the sample out and appends the message
    to `left_out` (the dataset's `left_out`, which the run counts and names).
    """
    wanted = list(names) if names is not None else sorted(set(images) | set(masks))
    samples, problems = [], []
    for name in wanted:
        image, mask = images.get(name), masks.get(name)
        if image is not None and mask is not None:
            samples.append(Sample(image, mask, name))
        elif image is not None:
            problems.append(f"image {image} has no mask (expected '{name}' among the masks)")
        elif mask is not None:
            problems.append(f"mask {mask} has no image (expected '{name}' among the images)")
        else:
            problems.append(f"'{name}' is listed but neither its image nor its mask exists")
    if problems and not skip_bad:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DatasetError(f"{dataset}: {len(problems)} unpaired file(s): " + "; ".join(problems[:5]) + more
                           + ". Restore the files, or set data.skip_bad=true to skip them.")
    for problem in problems:
        if left_out is not None:
            left_out.append(f"{dataset}: {problem}")
        warnings.warn(f"{dataset}: skipping: {problem}", stacklevel=2)
        log.warning("%s: skipping: %s", dataset, problem)
    return samples
