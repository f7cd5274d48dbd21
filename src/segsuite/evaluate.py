"""Evaluation entry point: `python -m segsuite.evaluate ckpt_path=... [dataset=...] [split=val|test] [tta=...]`.

Rebuilds model, loss and data from the config stored in the checkpoint (the dataset can be
replaced), predicts with the shared `Inferencer` (`tta=none|flip|multiscale|slide`) inside the
Lightning validation/test loop, prints a per-class table and the summary, and writes into its run
directory: `metrics.json`, `per_class.csv`, `confusion_matrix.png` and, with
`save_predictions=true`, palette PNGs (plus Cityscapes labelId PNGs for the benchmark server).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from segsuite.checkpoint import build_net, check_num_classes, describe, load_checkpoint, run_config
from segsuite.data.datasets.cityscapes import LABEL_IDS
from segsuite.inference import build_inferencer
from segsuite.utils.config import check_required
from segsuite.utils.instantiate import close_loggers
from segsuite.utils.paths import config_dir
from segsuite.utils.reporting import format_scores
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.runtime import apply_runtime_settings
from segsuite.utils.visualize import save_confusion_matrix_png, save_palette_png

register_resolvers()

log = logging.getLogger("segsuite.evaluate")
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


def _apply_overrides(cfg: DictConfig, train_cfg: DictConfig, ckpt: dict[str, Any]) -> None:
    """Replace the stored dataset / data root / batch size by the ones given on the command line."""
    dataset = cfg.get("dataset") or {}
    root = cfg.get("data_root") or dataset.get("root")
    with open_dict(train_cfg):
        if "num_classes" in dataset:  # a whole dataset group (`dataset=<name>`) replaces the stored one
            check_num_classes(ckpt, dataset.num_classes, f"dataset '{dataset.get('name')}'")
            train_cfg.dataset = dataset
        if root:
            train_cfg.dataset.root = root
            for split in ("train", "val", "test"):
                if train_cfg.dataset.get(split) and "root" in train_cfg.dataset[split]:
                    train_cfg.dataset[split].root = root
        if cfg.get("batch_size"):
            train_cfg.data.val_batch_size = cfg.batch_size
        if cfg.save_predictions:  # every prediction is written at its image's own size: no padded batches
            train_cfg.data.val_batch_size = 1
        train_cfg.data.num_workers = cfg.num_workers


def _check_output_dir(out: Path, overwrite: bool) -> None:
    existing = [out / name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists; pass overwrite=true to replace it, or choose "
                              f"another hydra.run.dir")


def write_per_class_csv(path: Path, class_names: Sequence[str], scores: dict[str, Any], confmat: torch.Tensor) -> None:
    """One row per class: IoU, accuracy, ground-truth and predicted pixel counts."""
    gt, pred = confmat.sum(dim=1).tolist(), confmat.sum(dim=0).tolist()
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "iou", "acc", "gt_pixels", "pred_pixels"])
        for i, name in enumerate(class_names):
            writer.writerow([name, scores["iou_per_class"][i].item(), scores["acc_per_class"][i].item(),
                             gt[i], pred[i]])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_path` on `cfg.split` with `cfg.tta`; return the summary metrics."""
    check_required(cfg)
    apply_runtime_settings(cfg)
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split={cfg.split!r}: expected 'val' or 'test'")
    out = Path(cfg.paths.output_dir)
    _check_output_dir(out, cfg.overwrite)
    ckpt = load_checkpoint(cfg.ckpt_path)
    info = ckpt["segsuite"]
    train_cfg = run_config(ckpt)
    _apply_overrides(cfg, train_cfg, ckpt)

    datamodule = instantiate(train_cfg.data, dataset=train_cfg.dataset, augmentation=train_cfg.augmentation,
                             _recursive_=False)
    inferencer = build_inferencer(cfg.tta, train_cfg.dataset.get("crop_size"))
    module = instantiate(
        train_cfg.module, net=build_net(ckpt), criterion=instantiate(train_cfg.loss), optimizer=None,
        scheduler=None, class_names=info["class_names"], lr=0.0, weight_decay=0.0,
    )
    module.inference = inferencer  # set after instantiate: Hydra would turn the dataclass into a config
    dataset_name = str(train_cfg.dataset.get("name", ""))
    callbacks = [EvalRecorder(
        out / "predictions" / "palette", palette=info["palette"],
        cityscapes_dir=out / "predictions" / "cityscapes_label_ids" if dataset_name.startswith("cityscapes") else None,
    )] if cfg.save_predictions else []
    log.info("evaluating %s (%s) on %s/%s with %s", cfg.ckpt_path, describe(ckpt), dataset_name, cfg.split, inferencer)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    if cfg.split == "val":
        trainer.validate(module, datamodule=datamodule, verbose=False)
        scores = module.last_val_scores
    else:
        trainer.test(module, datamodule=datamodule, verbose=False)
        scores = module.last_test_scores

    names = module.class_names
    print(format_scores(f"{cfg.split} metrics of {cfg.ckpt_path} (tta: {inferencer})", scores, names))
    summary = {f"{cfg.split}/{k}": v for k, v in
               {"mIoU": scores["miou"], "mAcc": scores["mean_acc"], "aAcc": scores["pixel_acc"],
                "fwIoU": scores["fwiou"]}.items()}
    summary.update({f"{cfg.split}/IoU/{n}": v for n, v in zip(names, scores["iou_per_class"].tolist())})
    summary.update({f"{cfg.split}/Acc/{n}": v for n, v in zip(names, scores["acc_per_class"].tolist())})
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(
        {**summary, "ckpt_path": str(cfg.ckpt_path), "tta": OmegaConf.to_container(cfg.tta, resolve=True)}, indent=2))
    write_per_class_csv(out / "per_class.csv", names, scores, scores["confmat"])
    save_confusion_matrix_png(scores["confmat"].numpy(), names, out / "confusion_matrix.png",
                              title=f"{dataset_name} {cfg.split}: confusion matrix (rows normalised)")
    print(f"{cfg.split}/mIoU: {scores['miou']:.4f}")
    print(f"run directory: {out.resolve()}")
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        evaluate(cfg)
    finally:
        close_loggers()


if __name__ == "__main__":
    main()
