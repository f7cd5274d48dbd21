"""Shared inference: whole-image or sliding-window prediction, multi-scale and flip test-time augmentation.

Validation (`SegmentationModule`), `segsuite.evaluate` and `segsuite.predict` all call one
`Inferencer`, so the three agree. Configured from `conf/tta/*.yaml`.

Averaging rules:
* sliding windows: overlapping windows' **logits** are summed and divided by a count map (a pixel
  seen by k windows gets the mean of its k logits);
* test-time views (scales x flips): each view's logits are resized back to the input size and
  turned into **softmax probabilities**, which are averaged; the result is returned as
  `log(mean probability)`, a valid logits tensor whose softmax is the mean probability (so losses
  and argmax work on it unchanged). A single view (scales `[1.0]`, no flip) returns the model's
  logits untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from segsuite.utils.layout import memory_format_of

Model = Callable[[torch.Tensor], torch.Tensor]
MODES = ("whole", "slide")


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride` pixels, the last one flush with the end.

    `length <= window` gives the single start 0 (the caller pads the image up to the window).
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def _logits_only(out) -> torch.Tensor:
    """Main logits of a model output (training-mode models may return `(logits, aux)`)."""
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class Inferencer:
    """Predicts logits `[N,C,H,W]` for normalised images `[N,3,H,W]` with a model `[N,3,h,w] -> [N,C,h,w]`.

    Args:
        mode: `whole` (one forward pass per image) or `slide` (windows of `crop_size` every `stride`).
        crop_size: window `[h, w]` for `slide`; images smaller than it are zero-padded (bottom/right)
            and the padding is cropped from the result.
        stride: window step `[h, w]` for `slide` (default: 2/3 of `crop_size`, windows overlap by a third).
        scales: test-time resize factors of the input (e.g. `[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]`).
        flip: also predict the horizontally flipped image (flipped back before averaging).
        window_batch: windows (and flipped copies) run through the model together per forward pass.
    """

    mode: str = "whole"
    crop_size: Sequence[int] | None = None
    stride: Sequence[int] | None = None
    scales: Sequence[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    window_batch: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tta.mode={self.mode!r}: expected one of {MODES}")
        if self.mode == "slide":
            if self.crop_size is None or len(self.crop_size) != 2:
                raise ValueError(f"tta.crop_size={self.crop_size}: sliding-window inference needs [height, width]")
            self.crop_size = tuple(int(v) for v in self.crop_size)
            default_stride = [math.ceil(2 * c / 3) for c in self.crop_size]  # overlap by a third
            self.stride = tuple(int(v) for v in (self.stride or default_stride))
            if len(self.stride) != 2 or min(self.stride) < 1 or any(s > c for s, c in zip(self.stride, self.crop_size)):
                raise ValueError(f"tta.stride={list(self.stride)}: expected [h, w] with 1 <= stride <= crop_size "
                                 f"{list(self.crop_size)} (larger strides would leave pixels unpredicted)")
        self.scales = [float(s) for s in self.scales]
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"tta.scales={self.scales}: expected a non-empty list of positive factors")
        if self.window_batch < 1:
            raise ValueError(f"tta.window_batch={self.window_batch}: expected >= 1")

    @property
    def single_view(self) -> bool:
        """True when no test-time augmentation is configured (one view at scale 1)."""
        return self.scales == [1.0] and not self.flip

    @torch.no_grad()
    def __call__(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        """Logits `[N,C,H,W]` (float32) for `images` `[N,3,H,W]`; see the module docstring for averaging."""
        if self.single_view:
            return self._predict(model, images).float()
        height, width = images.shape[-2:]
        prob_sum: torch.Tensor | None = None
        views = 0
        for scale in self.scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = images if size == (height, width) else F.interpolate(
                images, size=size, mode="bilinear", align_corners=False)
            batch = torch.cat([scaled, scaled.flip(-1)]) if self.flip else scaled
            logits = self._predict(model, batch).float()
            if self.flip:
                plain, flipped = logits.chunk(2)
                logits = torch.stack([plain, flipped.flip(-1)])
            else:
                logits = logits.unsqueeze(0)
            if size != (height, width):
                v, n, c = logits.shape[:3]
                logits = F.interpolate(logits.flatten(0, 1), size=(height, width), mode="bilinear",
                                       align_corners=False).view(v, n, c, height, width)
            probs = logits.softmax(dim=2).sum(dim=0)
            prob_sum = probs if prob_sum is None else prob_sum + probs
            views += logits.shape[0]
        return (prob_sum / views).clamp_min(torch.finfo(torch.float32).tiny).log()

    def _predict(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        if self.mode == "whole":
            return _logits_only(model(images))
        return self.slide(model, images)

    def slide(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits: windows batched `window_batch` at a time, overlaps averaged."""
        (crop_h, crop_w), (stride_h, stride_w) = self.crop_size, self.stride
        n, _, height, width = images.shape
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        full_h, full_w = images.shape[-2:]
        boxes = [(y, x) for y in window_starts(full_h, crop_h, stride_h)
                 for x in window_starts(full_w, crop_w, stride_w)]
        logit_sum: torch.Tensor | None = None
        count = torch.zeros((1, 1, full_h, full_w), device=images.device, dtype=torch.float32)
        per_pass = max(1, self.window_batch // n)  # windows per forward pass (each holds n crops)
        for first in range(0, len(boxes), per_pass):
            chunk = boxes[first:first + per_pass]
            crops = torch.cat([images[:, :, y:y + crop_h, x:x + crop_w] for y, x in chunk])
            out = _logits_only(model(crops)).float()
            if logit_sum is None:  # the output's memory format: adding NHWC windows into NCHW is ~10x slower
                layout = memory_format_of(out)
                logit_sum = torch.empty((n, out.shape[1], full_h, full_w), dtype=out.dtype, device=out.device,
                                        memory_format=layout).zero_()
            for k, (y, x) in enumerate(chunk):
                logit_sum[:, :, y:y + crop_h, x:x + crop_w] += out[k * n:(k + 1) * n]
                count[:, :, y:y + crop_h, x:x + crop_w] += 1
        logits = logit_sum.div_(count)
        return logits[:, :, :height, :width]


def build_inferencer(tta_cfg, default_crop_size: Sequence[int] | None) -> Inferencer:
    """Instantiate a `conf/tta/*.yaml` node; a missing slide `crop_size` becomes `default_crop_size`
    (the training crop size stored in the checkpoint)."""
    from hydra.utils import instantiate

    overrides = {}
    if tta_cfg.get("mode") == "slide" and tta_cfg.get("crop_size") is None:
        if default_crop_size is None:
            raise ValueError("tta.crop_size is null and the checkpoint stores no training crop size; "
                             "pass tta.crop_size=[h,w]")
        overrides["crop_size"] = [int(v) for v in default_crop_size]
    return instantiate(tta_cfg, **overrides)
