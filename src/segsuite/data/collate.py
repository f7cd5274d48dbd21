"""Batches from dataset items: padding to one size, and the bad samples (`data.skip_bad`) a batch reports."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F


def collate(items: list[dict[str, Any]], ignore_index: int = 255, split: str = "") -> dict[str, Any]:
    """Stack tensors (names stay a list). Images of different sizes (validation on full images of
    VOC, ADE20K, COCO) are padded at the bottom/right: images with 0, masks with `ignore_index`,
    so padding never counts in metrics or losses. Per-pixel extras (distance maps) pad with 0;
    tensors without spatial dims (e.g. class-id lists) are stacked as they are.

    Items of bad samples (`data.skip_bad`: `{"name", "skipped": message}`) are dropped, nothing
    takes their place, and their messages travel with the batch as `batch["skipped"]` (a list of
    `(split, message)`): the batch is how a worker process reports them to the main process, where
    `SegDataModule.on_before_batch_transfer` records them. A batch of bad samples only holds no
    images (`image` of shape [0, 3, 1, 1]); the module skips it.
    """
    batch: dict[str, Any] = {}
    skipped = [(split, item["skipped"]) for item in items if "skipped" in item]
    if skipped:
        batch["skipped"] = skipped
        items = [item for item in items if "skipped" not in item]
        if not items:
            return {**batch, "image": torch.zeros(0, 3, 1, 1), "mask": torch.zeros(0, 1, 1, dtype=torch.int64),
                    "name": []}
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    for key in items[0]:
        values = [item[key] for item in items]
        if not isinstance(values[0], torch.Tensor):
            batch[key] = values
            continue
        if values[0].ndim >= 2 and any(v.shape[-2:] != (height, width) for v in values):
            fill = ignore_index if key == "mask" else 0
            values = [F.pad(v, (0, width - v.shape[-1], 0, height - v.shape[-2]), value=fill) for v in values]
        batch[key] = _stack(values)
    return batch


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """`torch.stack`; `[C,H,W]` views of HWC pixels stack into a channels_last batch without transposing."""
    if values[0].ndim == 3 and values[0].shape[0] > 1 and all(
            v.permute(1, 2, 0).is_contiguous() for v in values):
        return torch.stack([v.permute(1, 2, 0) for v in values]).permute(0, 3, 1, 2)
    return torch.stack(values)


def add_skipped(skipped: dict[str, list[str]], entries: Iterable[tuple[str, str]]) -> None:
    """Add `(split, message)` entries to `skipped` (split -> messages), each message once."""
    for split, message in entries:
        known = skipped.setdefault(split, [])
        if message not in known:
            known.append(message)


def gather_skipped(skipped: dict[str, list[str]]) -> dict[str, list[str]]:
    """`skipped` merged over the processes of a distributed run (each reads other samples): a collective
    call there, which every process makes; a copy of `skipped` otherwise."""
    parts: list[Any] = [skipped]
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        parts = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, skipped)
    merged: dict[str, list[str]] = {}
    for part in parts:
        add_skipped(merged, ((split, m) for split, messages in (part or {}).items() for m in messages))
    return merged
