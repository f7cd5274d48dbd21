"""Scoring a checkpoint: writing its predictions as PNGs, and its scores as metrics.json,
per_class.csv and a confusion-matrix PNG (used by `segsuite.evaluate`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from segsuite.data.datasets.cityscapes import LABEL_IDS
from segsuite.utils.visualize import save_confusion_matrix_png, save_palette_png

OUTPUT_FILES = ("metrics.json", "per_class.csv", "confusion_matrix.png", "predictions")


def cityscapes_train_to_label_id() -> np.ndarray:
    """256-entry table trainId -> official Cityscapes labelId (ignore/unknown -> 0 'unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(LABEL_IDS)] = LABEL_IDS
    return lut


class EvalRecorder(pl.Callback):
    """Writes the module's eval predictions as PNGs (the metrics and the confusion matrix come
    from the module's `SegmentationMetrics`, reduced over DDP ranks).

    Args:
        save_dir: folder for `<name>.png` palette PNGs.
        palette: class colours of the palette PNGs.
        cityscapes_dir: folder for `<name>_leftImg8bit.png` labelId PNGs (Cityscapes benchmark format).
    """

    def __init__(self, save_dir: Path, palette: Sequence[Sequence[int]] = (),
                 cityscapes_dir: Path | None = None) -> None:
        self.save_dir = save_dir
        self.palette = palette
        self.cityscapes_dir = cityscapes_dir
        self.label_id_lut = cityscapes_train_to_label_id() if cityscapes_dir is not None else None

    def _record(self, pl_module: pl.LightningModule, batch: dict[str, Any]) -> None:
        for name, pred in zip(batch["name"], pl_module.last_eval_preds.cpu().numpy().astype(np.uint8)):
            save_palette_png(pred, self.palette, self.save_dir / f"{name}.png")
            if self.label_id_lut is not None:
                path = self.cityscapes_dir / f"{Path(name).name}_leftImg8bit.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(self.label_id_lut[pred]).save(path)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record(pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record(pl_module, batch)


def prediction_writers(save: bool, out: Path, palette: Sequence[Sequence[int]], dataset_name: str) -> list[pl.Callback]:
    """The callbacks that write an evaluation's predictions into `out/predictions` (none unless `save`):
    palette PNGs, plus labelId PNGs for the Cityscapes benchmark server on a Cityscapes dataset."""
    if not save:
        return []
    cityscapes = out / "predictions" / "cityscapes_label_ids" if dataset_name.startswith("cityscapes") else None
    return [EvalRecorder(out / "predictions" / "palette", palette=palette, cityscapes_dir=cityscapes)]


def check_output_dir(out: Path, overwrite: bool) -> None:
    existing = [out / name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists; pass overwrite=true to replace it, or choose "
                              f"another hydra.run.dir")


def write_per_class_csv(path: Path, class_names: Sequence[str], scores: dict[str, Any], confmat: torch.Tensor) -> None:
    """One row per class: IoU, accuracy, ground-truth and predicted pixel counts (and, when scored,
    the BF score and the number of images it averages)."""
    gt, pred = confmat.sum(dim=1).tolist(), confmat.sum(dim=0).tolist()
    boundary = "bf_per_class" in scores
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "iou", "acc", "gt_pixels", "pred_pixels"] + (["bf", "bf_images"] if boundary else []))
        for i, name in enumerate(class_names):
            bf = [scores["bf_per_class"][i].item(), int(scores["images_per_class"][i])] if boundary else []
            writer.writerow([name, scores["iou_per_class"][i].item(), scores["acc_per_class"][i].item(),
                             gt[i], pred[i], *bf])


def summarise(split: str, scores: dict[str, Any], class_names: Sequence[str]) -> dict[str, float]:
    """`<split>/mIoU`, `mAcc`, `aAcc`, `fwIoU` and per-class `IoU/<name>`, `Acc/<name>` (and, when
    scored, `<split>/mBF` and `BF/<name>`)."""
    summary = {f"{split}/{k}": v for k, v in
               {"mIoU": scores["miou"], "mAcc": scores["mean_acc"], "aAcc": scores["pixel_acc"],
                "fwIoU": scores["fwiou"]}.items()}
    summary.update({f"{split}/IoU/{n}": v for n, v in zip(class_names, scores["iou_per_class"].tolist())})
    summary.update({f"{split}/Acc/{n}": v for n, v in zip(class_names, scores["acc_per_class"].tolist())})
    if "mbf" in scores:
        summary[f"{split}/mBF"] = scores["mbf"]
        summary.update({f"{split}/BF/{n}": v for n, v in zip(class_names, scores["bf_per_class"].tolist())})
    return summary


def write_outputs(out: Path, summary: dict[str, Any], scores: dict[str, Any], class_names: Sequence[str],
                  title: str) -> None:
    """metrics.json (the summary), per_class.csv and confusion_matrix.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_per_class_csv(out / "per_class.csv", class_names, scores, scores["confmat"])
    save_confusion_matrix_png(scores["confmat"].numpy(), class_names, out / "confusion_matrix.png", title=title)
