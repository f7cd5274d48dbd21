"""Pictures of predictions: palette-coloured masks, overlays, and a confusion-matrix plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IGNORE_COLOUR = (255, 255, 255)  # ignored pixels (and ids without a colour) are drawn white


def palette_array(palette: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """`palette` as a uint8 `[num_classes, 3]` array; raises if it has too few colours."""
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(colours) < num_classes:
        raise ValueError(f"palette has {len(colours)} colours for {num_classes} classes")
    return colours[:num_classes]


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """Class-id mask `[H,W]` -> RGB uint8 `[H,W,3]` via a 256-entry lookup; `ignore_index` and ids
    without a colour are drawn in `IGNORE_COLOUR`."""
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOUR
    lut[: len(colours)] = colours
    if 0 <= ignore_index < 256:
        lut[ignore_index] = IGNORE_COLOUR
    return lut[np.clip(mask, 0, 255).astype(np.uint8)]


def denormalise(image: torch.Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """`[3,H,W]` normalised float image -> `[H,W,3]` uint8 RGB (inverse of albumentations.Normalize
    with max_pixel_value=255: x = (pixel / 255 - mean) / std)."""
    image = torch.as_tensor(image).detach().float().cpu()
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    pixels = (image * std_t + mean_t) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def image_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tile `rows` of `[H,W,3]` uint8 panels into one `[H',W',3]` image (panels padded to the
    largest size, `gap` black pixels between them)."""
    height = max(panel.shape[0] for row in rows for panel in row)
    width = max(panel.shape[1] for row in rows for panel in row)
    columns = max(len(row) for row in rows)
    grid = np.zeros((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top, left = r * (height + gap), c * (width + gap)
            grid[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
    return grid


def save_palette_png(mask: np.ndarray, palette: Sequence[Sequence[int]], path: Path) -> None:
    """Write a palette-indexed PNG: pixel values are the class ids, viewers show the class colours."""
    image = Image.fromarray(np.clip(mask, 0, 255).astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    flat[: len(colours)] = colours
    image.putpalette(flat.flatten().tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured `mask` over the RGB uint8 `image` (`alpha` = weight of the mask colours)."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(mask, palette).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def save_rgb(image: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 array (format from the suffix: .png, .jpg)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def normalise_rows(confmat: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (row = ground truth; each row sums to 1, empty rows stay 0)."""
    confmat = np.asarray(confmat, dtype=np.float64)
    totals = confmat.sum(axis=1, keepdims=True)
    return np.divide(confmat, totals, out=np.zeros_like(confmat), where=totals > 0)


def save_confusion_matrix_png(confmat: np.ndarray, class_names: Sequence[str], path: Path,
                              title: str = "confusion matrix (rows: ground truth, normalised)") -> None:
    """Plot the row-normalised confusion matrix with class names on both axes (values shown up to 25 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = normalise_rows(confmat)
    n = len(class_names)
    if norm.shape != (n, n):
        raise ValueError(f"confusion matrix is {norm.shape} but there are {n} class names")
    side = min(4 + 0.45 * n, 40)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
