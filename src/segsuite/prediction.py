"""Predicting new images with a checkpoint: finding the inputs, batching them by size, and the
`Predictor` (network + normalisation + inferencer) that turns RGB images into class-id masks."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from segsuite.data.datasets.base import DatasetError
from segsuite.data.io import read_image
from segsuite.data.transforms import DeviceNormalize
from segsuite.inference import Inferencer
from segsuite.metrics import scores_to_labels
from segsuite.utils.visualize import overlay, save_palette_png, save_rgb


def find_images(spec: str, extensions: Sequence[str]) -> list[Path]:
    """Image files named by `spec`: one file, a folder (files with `extensions`, sorted), or a glob."""
    path = Path(spec)
    if path.is_file():
        return [path]
    suffixes = {e.lower() for e in extensions}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise FileNotFoundError(f"input={spec}: the folder holds no images with extensions {sorted(suffixes)}")
        return files
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"input={spec}: no such file or folder, and no file matches it as a glob pattern")
    return files


def output_paths(images: Sequence[Path], out_dir: Path) -> dict[Path, tuple[Path, Path]]:
    """(mask, overlay) output paths per image; two inputs with the same stem fail, naming both."""
    seen: dict[str, Path] = {}
    paths = {}
    for image in images:
        if image.stem in seen:
            raise ValueError(f"{seen[image.stem]} and {image} would write the same outputs ({image.stem}_mask.png); "
                             f"rename one or predict them separately")
        seen[image.stem] = image
        paths[image] = (out_dir / f"{image.stem}_mask.png", out_dir / f"{image.stem}_overlay.png")
    return paths


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file header, or None if it cannot be read (reported later, at decode time)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - any failure here is reported by read_image with its reason
        return None


def batches_by_size(images: Sequence[Path], batch_size: int) -> Iterator[list[Path]]:
    """Groups of at most `batch_size` images of one size (unreadable headers come alone)."""
    groups: dict[Any, list[Path]] = {}
    for path in images:
        size = image_size(path)
        groups.setdefault(size if size is not None else path, []).append(path)
    for group in groups.values():
        for first in range(0, len(group), batch_size):
            yield group[first:first + batch_size]


class Predictor:
    """Checkpoint model + normalisation + `Inferencer`: RGB uint8 images -> class-id masks."""

    def __init__(self, net: torch.nn.Module, mean: Sequence[float], std: Sequence[float], inferencer: Inferencer,
                 device: torch.device) -> None:
        self.net = net.eval().to(device)
        self.device = device
        self.normalize = DeviceNormalize(mean, std)  # the training datamodule's normalisation
        self.inferencer = inferencer

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Masks `[N,H,W]` (uint8 class ids) for same-size RGB uint8 images `[H,W,3]`."""
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2)
        logits = self.inferencer(self.net, self.normalize(x))
        return scores_to_labels(logits).to(torch.uint8).cpu().numpy()


def predict_files(predictor: Predictor, targets: dict[Path, tuple[Path, Path]], palette: Sequence[Sequence[int]],
                  batch_size: int, overlay_alpha: float, progress_bar: bool,
                  log: Any) -> tuple[list[Path], dict[str, str]]:
    """Predict every image of `targets` (image -> (mask path, overlay path)) in same-size batches and
    write its palette mask and overlay; an unreadable image is logged and skipped.

    Returns the masks written and {unreadable image: reason}.
    """
    written: list[Path] = []
    skipped: dict[str, str] = {}
    with tqdm(total=len(targets), desc="predict", unit="img", disable=not progress_bar) as bar:
        for group in batches_by_size(list(targets), batch_size):
            loaded = []
            for path in group:
                try:
                    loaded.append((path, read_image(path)))
                except DatasetError as err:
                    skipped[str(path)] = str(err)
                    log.warning("skipping unreadable image %s", err)
                    bar.update(1)
            if not loaded:
                continue
            masks = predictor([image for _, image in loaded])
            for (path, image), mask in zip(loaded, masks):
                mask_path, overlay_path = targets[path]
                save_palette_png(mask, palette, mask_path)
                save_rgb(overlay(image, mask, palette, overlay_alpha), overlay_path)
                written.append(mask_path)
                bar.update(1)
    return written, skipped
