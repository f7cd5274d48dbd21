"""Predicting new images with a checkpoint: finding the inputs, batching them by size, and the
`Predictor` (network + normalisation + inferencer) that turns RGB images into class-id masks.

`load` (`segsuite.load`) builds the `Predictor` of a zoo name, checkpoint or run directory: the one
path `python -m segsuite.predict` takes too, so the Python API and the command give the same masks."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from segsuite.catalog import group_config
from segsuite.checkpoint import build_net, load_checkpoint
from segsuite.data.datasets.base import DatasetError
from segsuite.data.io import read_image
from segsuite.data.transforms import DeviceNormalize
from segsuite.data.verify import VerifyReport, bad_files_error, check_image_file
from segsuite.inference import Inferencer, build_inferencer
from segsuite.manifest import RunManifest
from segsuite.metrics import scores_to_labels
from segsuite.utils.visualize import overlay, save_palette_png, save_rgb


def find_images(spec: str, extensions: Sequence[str]) -> list[Path]:
    """Image files named by `spec`: one file, a folder (files with `extensions`, sorted), or a glob."""
    path = Path(spec)
    if path.is_file():
        return [path]
    suffixes = {e.lower() for e in extensions}
    if path.is_dir():  # links that cannot be followed (a link loop) are listed: the check names them
        files = sorted(p for p in path.iterdir() if (p.is_file() or p.is_symlink()) and p.suffix.lower() in suffixes)
        if not files:
            raise FileNotFoundError(f"input={spec}: the folder holds no images with extensions {sorted(suffixes)}")
        return files
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"input={spec}: no such file or folder, and no file matches it as a glob pattern")
    return files


def check_images(images: Sequence[Path], verify: str, skip_bad: bool) -> tuple[list[Path], dict[str, str]]:
    """The inputs checked as training checks its files with `data.verify=quick` (the file is complete,
    its header opens; `verify=off`: not at all), before the model is loaded: a bad one stops the run
    naming it and the fix (the message of training's check), or with `skip_bad` is left out.

    Returns the images to predict and {bad image: reason}.
    """
    if verify not in ("quick", "off"):
        raise ValueError(f"data.verify={verify!r}: expected quick or off (predicting decodes every image)")
    bad: dict[str, str] = {}
    for path in images if verify == "quick" else ():
        try:
            check_image_file(path)
        except DatasetError as err:
            bad[str(path)] = str(err)
    if bad and not skip_bad:
        raise bad_files_error(VerifyReport("input", "quick", len(images), bad=list(bad.values())), "predicting")
    return [p for p in images if str(p) not in bad], bad


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
    """A checkpoint's network + its normalisation + an `Inferencer`: RGB images -> class-id label maps.

    What `segsuite.load` returns and what `python -m segsuite.predict` runs, so both give the same
    masks. Attributes: `net` (the `nn.Module`, in eval mode, on `device`), `classes` (names in label
    order), `palette` (uint8 `[C,3]`), `mean`/`std` (normalisation in 0-1 units), `inferencer`,
    `manifest` (the checkpoint's `RunManifest`, None when built from parts).
    """

    def __init__(self, net: torch.nn.Module, mean: Sequence[float], std: Sequence[float], inferencer: Inferencer,
                 device: torch.device, classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None, batch_size: int = 4,
                 manifest: RunManifest | None = None) -> None:
        self.net = net.eval().to(device)
        self.device = device
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.normalize = DeviceNormalize(mean, std)  # the training datamodule's normalisation
        self.inferencer = inferencer
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.palette = None if palette is None else np.asarray(palette, dtype=np.uint8)
        self.batch_size = int(batch_size)
        self.manifest = manifest

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str | torch.device | None = "auto", tta: Any = None,
                        batch_size: int = 4) -> Predictor:
        """The predictor of a loaded segsuite checkpoint; `tta` as in `segsuite.load`."""
        manifest = RunManifest.from_checkpoint(ckpt)
        inferencer = tta if isinstance(tta, Inferencer) else build_inferencer(
            tta_config(tta), manifest.config["dataset"].get("crop_size"))
        return cls(build_net(ckpt), manifest.mean, manifest.std, inferencer, resolve_device(device),
                   manifest.class_names, manifest.palette, batch_size, manifest)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits `[N,C,H,W]` (float32, on the device) of same-size RGB images `[N,H,W,3]` in 0-255
        (uint8, or float)."""
        return self.inferencer(self.net, self.normalize(images.to(self.device).permute(0, 3, 1, 2)))

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Masks `[N,H,W]` (uint8 class ids) for same-size RGB uint8 images `[H,W,3]`."""
        logits = self.logits(torch.from_numpy(np.stack(images)))
        return scores_to_labels(logits).to(torch.uint8).cpu().numpy()

    def predict(self, x: Any, probs: bool = False) -> Any:
        """Label maps at the input's size, and with `probs=True` also the class probabilities.

        `x` is one image or a batch:

        * a path (read as `segsuite.predict` reads files), a PIL image, a numpy array `[H,W,3]` (RGB,
          as PIL gives) or a tensor `[3,H,W]` (as torchvision gives): one label map `[H,W]`;
        * a numpy array `[N,H,W,3]` or a tensor `[N,3,H,W]`: label maps `[N,H,W]`;
        * a list or tuple of single images (sizes may differ): a list of label maps.

        uint8 pixels are 0-255, float pixels 0-1. Label maps are numpy uint8 (int64 beyond 256
        classes); probabilities are float32 `[C,H,W]` per image (the softmax of the inferencer's
        logits: with test-time augmentation, the mean probability of the views). Images of one size
        are predicted `batch_size` at a time, as the command does.
        """
        if isinstance(x, (list, tuple)):
            kind, images = "list", [_as_image(item) for item in x]
        elif isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 4:
            kind, images = "stack", [_as_image(item) for item in x]
        else:
            kind, images = "single", [_as_image(x)]
        labels: list[Any] = [None] * len(images)
        scores: list[Any] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):  # same-size groups in order of appearance, as batches_by_size
            groups.setdefault((*image.shape, image.dtype), []).append(index)
        for group in groups.values():
            for first in range(0, len(group), self.batch_size):
                chunk = group[first:first + self.batch_size]
                logits = self.logits(torch.stack([images[i] for i in chunk]))
                dtype = torch.uint8 if logits.shape[1] <= 256 else torch.int64
                for i, label in zip(chunk, scores_to_labels(logits).to(dtype).cpu().numpy()):
                    labels[i] = label
                if probs:
                    for i, prob in zip(chunk, logits.softmax(dim=1).float().cpu().numpy()):
                        scores[i] = prob
        if kind == "single":
            labels, scores = labels[0], scores[0]
        elif kind == "stack":
            labels, scores = np.stack(labels), (np.stack(scores) if probs else None)
        return (labels, scores) if probs else labels


def _as_image(x: Any) -> torch.Tensor:
    """One image as an RGB tensor `[H,W,3]`: uint8 0-255 as given, float 0-1 scaled to 0-255 (float32).
    Numpy arrays are channels-last (as PIL and OpenCV give), tensors channels-first (as torchvision)."""
    if isinstance(x, (str, PathLike)):
        return torch.from_numpy(read_image(Path(x)))
    if isinstance(x, Image.Image):
        return torch.from_numpy(np.asarray(x.convert("RGB")).copy())
    if isinstance(x, np.ndarray):
        image, channel_axis = torch.from_numpy(np.ascontiguousarray(x)), -1
    elif isinstance(x, torch.Tensor):
        image, channel_axis = x.detach().cpu(), 0
    else:
        raise TypeError(f"cannot predict a {type(x).__name__}: pass a path, a PIL image, a numpy array [H,W,3] "
                        f"or a tensor [3,H,W] (or a batch of them: a list, [N,H,W,3] or [N,3,H,W])")
    if image.ndim == 2:
        image = image.unsqueeze(-1)
    elif image.ndim == 3 and channel_axis == 0:
        image = image.permute(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        layout = "[3,H,W]" if channel_axis == 0 else "[H,W,3]"
        raise ValueError(f"an image of shape {list(x.shape)}: expected {layout} (RGB), [H,W] (grey) or a batch")
    image = image[..., :3] if image.shape[-1] == 4 else image.expand(-1, -1, 3) if image.shape[-1] == 1 else image
    if image.dtype == torch.uint8:
        return image.contiguous()
    if not image.is_floating_point():
        raise TypeError(f"images of {image.dtype}: expected uint8 (0-255) or float (0-1)")
    peak = float(image.max()) if image.numel() else 0.0
    if peak > 1.0 + 1e-3:
        raise ValueError(f"a float image reaching {peak:g}: float pixels are read as 0-1 (as torchvision's "
                         f"to_tensor gives); pass uint8 0-255 or divide by 255")
    return (image.float() * 255.0).contiguous()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` (or None): CUDA where available, else the CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def tta_config(tta: Any) -> DictConfig:
    """A `conf/tta` node: None = `none`; a name (`flip`, `multiscale`, `slide`); or a dict / config node."""
    if tta is None or isinstance(tta, str):
        return group_config("tta", tta or "none")
    return tta if isinstance(tta, DictConfig) else OmegaConf.create(dict(tta))


def load(name_or_path: str | PathLike, device: str | torch.device | None = "auto", tta: Any = None,
         batch_size: int = 4) -> Predictor:
    """A `Predictor` for a zoo name (`camvid_enet`), a checkpoint file or a run directory (its
    `checkpoints/best.ckpt`, else `last.ckpt`); `segsuite.load`.

    `device`: `auto` (CUDA where available), `cpu`, `cuda:1`, ...; `tta`: None (one whole-image
    pass), a `conf/tta` name (`flip`, `multiscale`, `slide`), a dict of its keys or an `Inferencer`.
    A zoo checkpoint's sha256 is verified on load.
    """
    spec: str | Path = name_or_path
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        candidates = [folder / sub / name for sub in ("checkpoints", ".") for name in ("best.ckpt", "last.ckpt")]
        spec = next((p for p in candidates if p.is_file()), None)
        if spec is None:
            raise FileNotFoundError(f"{folder} holds no checkpoints/best.ckpt or checkpoints/last.ckpt: pass the run "
                                    f"directory of a segsuite.train run, a checkpoint file or a zoo name")
    return Predictor.from_checkpoint(load_checkpoint(spec, key="name_or_path"), device, tta, batch_size)


def predict_files(predictor: Predictor, targets: dict[Path, tuple[Path, Path]], palette: Sequence[Sequence[int]],
                  batch_size: int, overlay_alpha: float, progress_bar: bool,
                  log: Any, skip_bad: bool = True) -> tuple[list[Path], dict[str, str]]:
    """Predict every image of `targets` (image -> (mask path, overlay path)) in same-size batches and
    write its palette mask and overlay; an image that cannot be decoded raises, or with `skip_bad`
    is logged and skipped.

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
                    if not skip_bad:
                        raise DatasetError(f"{err} Set data.skip_bad=true to leave bad images out.") from err
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
