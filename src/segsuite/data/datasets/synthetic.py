"""A procedural scene dataset: no files, deterministic for a given seed, split and index.

Each image holds a few objects on a varied background. Object classes differ in shape, colour
and texture, and the three cues are deliberately shared between classes (class k takes shape
k mod 6, colour k mod 4 and texture k mod 5), so no single cue identifies a class: a model has to
combine shape, colour and texture over a neighbourhood. Class 0 is the background.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from segsuite.data.datasets.base import SegDataset

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
TEXTURES = ("flat", "stripes", "checker", "dots", "grid")
HUES = (0.0, 0.33, 0.6, 0.13)  # red, green, blue, orange
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def default_palette(num_classes: int) -> np.ndarray:
    """A distinct colour per class (background black)."""
    colours = [(0, 0, 0)]
    for k in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.61803) % 1.0, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours, dtype=np.uint8)


def class_recipe(k: int) -> tuple[str, float, str]:
    """(shape, hue, texture) of object class k >= 1."""
    j = k - 1
    return SHAPES[j % len(SHAPES)], HUES[j % len(HUES)], TEXTURES[j % len(TEXTURES)]


def default_class_names(num_classes: int) -> list[str]:
    """Names such as `red_circle_flat`, derived from each class's recipe."""
    colour_names = {0.0: "red", 0.33: "green", 0.6: "blue", 0.13: "orange"}
    names = ["background"]
    for k in range(1, num_classes):
        shape, hue, texture = class_recipe(k)
        names.append(f"{colour_names[hue]}_{shape}_{texture}")
    return names


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "triangle":
        s = np.sqrt(3.0)
        return (v <= 0.5) & (s * u - v <= 1.0) & (-s * u - v <= 1.0)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    if shape == "cross":
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Brightness modulation in [0, 1] over object coordinates."""
    f = 3.0
    if texture == "flat":
        return np.ones_like(u)
    if texture == "stripes":
        return (np.sin((u + phase) * f * np.pi) > 0).astype(np.float32)
    if texture == "checker":
        return ((np.floor((u + phase) * f) + np.floor((v + phase) * f)) % 2).astype(np.float32)
    if texture == "dots":
        du = ((u + phase) * f) % 1.0 - 0.5
        dv = ((v + phase) * f) % 1.0 - 0.5
        return (du * du + dv * dv > 0.09).astype(np.float32)
    if texture == "grid":
        du = np.abs(((u + phase) * f) % 1.0 - 0.5)
        dv = np.abs(((v + phase) * f) % 1.0 - 0.5)
        return (np.minimum(du, dv) > 0.12).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


# Farthest point of any shape from its centre, in radii: the square's corners, 0.8 * sqrt(2) = 1.131.
_REACH = 1.14


def _box(cy: float, cx: float, reach: float, h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns within `reach` pixels of (cy, cx), clipped to the image (may be empty)."""
    return (slice(max(int(cy - reach) - 1, 0), min(int(cy + reach) + 2, h)),
            slice(max(int(cx - reach) - 1, 0), min(int(cx + reach) + 2, w)))


class SyntheticShapes(SegDataset):
    """Procedurally generated scenes of textured, coloured shapes.

    Args:
        split: "train", "val" or "test" (each split draws from its own seed stream).
        num_images: number of images in the split.
        image_size: (height, width).
        num_classes: classes including the background (2..31).
        class_names: names (default: derived from each class's colour, shape and texture).
        palette: C x 3 RGB colours for visualisation (default: distinct hues).
        objects_per_image: (min, max) number of objects.
        object_size: (min, max) object radius as a fraction of the shorter image side.
        seed: base seed; the same (seed, split, index) always gives the same image.
        preload: render every image once, here, and serve copies from memory (uint8 images and
            masks: num_images x H x W x 4 bytes, 64 MiB for the default 1000 at 128x128). Rendering
            is ~90% of a sample's cost in a worker; preloaded, epochs after the first cost only the
            augmentation, and dataloader workers share the arrays (fork). Off: render on every access.
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int = 1000,
        image_size: Sequence[int] = (128, 128),
        num_classes: int = 6,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        objects_per_image: Sequence[int] = (2, 5),
        object_size: Sequence[float] = (0.12, 0.3),
        seed: int = 0,
        preload: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split={split!r}: expected one of {sorted(_SPLIT_OFFSET)}")
        if not 2 <= num_classes <= len(SHAPES) * len(TEXTURES) + 1:
            raise ValueError(f"num_classes={num_classes}: expected 2..{len(SHAPES) * len(TEXTURES) + 1}")
        self.split = split
        self.num_images = int(num_images)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.classes = list(class_names) if class_names is not None else default_class_names(num_classes)
        if len(self.classes) != num_classes:
            raise ValueError(f"class_names has {len(self.classes)} names but num_classes={num_classes}")
        self.palette = (
            np.asarray(palette, dtype=np.uint8) if palette is not None else default_palette(num_classes)
        )
        if self.palette.shape != (num_classes, 3):
            raise ValueError(f"palette must be {num_classes} x 3 RGB values, got shape {self.palette.shape}")
        self.objects_per_image = (int(objects_per_image[0]), int(objects_per_image[1]))
        self.object_size = (float(object_size[0]), float(object_size[1]))
        self.seed = int(seed)
        self._grid: np.ndarray | None = None
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        if preload:
            self._preload()

    def __len__(self) -> int:
        return self.num_images

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        if self._images is not None and self._masks is not None:  # copies: callers may write to them
            return self._images[index].copy(), self._masks[index].astype(np.int64), self._name(index)
        return self.render(index)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Image [H,W,3] uint8, mask [H,W] int64 and name of `index`, drawn from its own seed."""
        rng = np.random.default_rng([self.seed, _SPLIT_OFFSET[self.split] + index])
        h, w = self.image_size
        yy, xx = self._pixel_grid()
        image = self._background(rng, yy, xx)
        mask = np.zeros((h, w), dtype=np.int64)
        side = min(h, w)
        for _ in range(rng.integers(self.objects_per_image[0], self.objects_per_image[1] + 1)):
            k = int(rng.integers(1, self.num_classes))
            shape, hue, texture = class_recipe(k)
            radius = rng.uniform(*self.object_size) * side
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            angle = rng.uniform(0, 2 * np.pi)
            c, s = np.cos(angle), np.sin(angle)
            # every shape lies within _REACH radii of its centre: draw it in that box only
            box = _box(cy, cx, _REACH * radius, h, w)
            dy, dx = (yy[box] - cy) / radius, (xx[box] - cx) / radius
            u, v = c * dx + s * dy, -s * dx + c * dy
            inside = _shape_mask(shape, u, v)
            rgb = np.array(
                colorsys.hsv_to_rgb(
                    (hue + rng.uniform(-0.03, 0.03)) % 1.0, rng.uniform(0.6, 0.95), rng.uniform(0.7, 1.0)
                ),
                dtype=np.float32,
            )
            shade = 0.45 + 0.55 * _texture(texture, u, v, rng.uniform(0, 1))
            image[box][inside] = shade[inside, None] * rgb[None, :]
            mask[box][inside] = k
        image += rng.normal(0.0, 0.03, image.shape).astype(np.float32)
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return image, mask, self._name(index)

    def _name(self, index: int) -> str:
        return f"{self.split}_{index:06d}"

    def _preload(self) -> None:
        h, w = self.image_size
        images = np.empty((self.num_images, h, w, 3), dtype=np.uint8)
        masks = np.empty((self.num_images, h, w), dtype=np.uint8)  # labels <= 30, see num_classes
        for i in tqdm(range(self.num_images), desc=f"rendering synthetic {self.split} images", disable=None,
                      leave=False):
            images[i], masks[i], _ = self.render(i)
        self._images, self._masks = images, masks

    def _pixel_grid(self) -> np.ndarray:
        """Row and column coordinates [2,H,W] (float32), built once per dataset (read-only)."""
        if self._grid is None or self._grid.shape[1:] != self.image_size:
            self._grid = np.mgrid[0:self.image_size[0], 0:self.image_size[1]].astype(np.float32)
            self._grid.flags.writeable = False
        return self._grid

    @staticmethod
    def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """A gradient between two muted colours with a faint random wave pattern."""
        h, w = yy.shape
        a = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.2, 0.8)))
        b = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.2, 0.8)))
        theta = rng.uniform(0, 2 * np.pi)
        t = (np.cos(theta) * xx / w + np.sin(theta) * yy / h + 1.0) / 2.0
        freq = rng.uniform(0.05, 0.2)
        wave = 0.08 * np.sin(freq * (xx * np.cos(theta + 1.0) + yy * np.sin(theta + 1.0)))
        image = (1 - t)[..., None] * a + t[..., None] * b + wave[..., None]
        return image.astype(np.float32)
