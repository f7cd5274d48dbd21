"""Turning normalised images and label masks into displayable uint8 RGB arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IGNORE_COLOUR = (255, 255, 255)  # pixels with the ignore label are drawn white


def denormalise(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """`[3,H,W]` normalised float image -> `[H,W,3]` uint8 RGB (inverse of albumentations.Normalize
    with max_pixel_value=255: x = (pixel / 255 - mean) / std)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    pixels = (image.detach().float().cpu() * std_t + mean_t) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def colourise(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """`[H,W]` class ids -> `[H,W,3]` uint8 colours from `palette` (C x 3); ignored pixels white."""
    palette = np.asarray(palette, dtype=np.uint8)
    out = np.empty((*mask.shape, 3), dtype=np.uint8)
    out[...] = IGNORE_COLOUR
    valid = (mask >= 0) & (mask < len(palette)) & (mask != ignore_index)
    out[valid] = palette[mask[valid]]
    return out


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
