"""Evaluation entry point: `python -m segsuite.evaluate ckpt_path=... [split=val|test]`.

Rebuilds model, loss and data from the config stored in the checkpoint (overridable), runs the
Lightning validation/test loop and reports the metrics; writes `metrics.json` into its own run
directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from segsuite.checkpoint import build_net, load_checkpoint, run_config
from segsuite.utils.config import check_required
from segsuite.utils.instantiate import close_loggers
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers

register_resolvers()
from segsuite.utils.reporting import format_scores

log = logging.getLogger("segsuite.evaluate")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_path` on `cfg.split`; return the summary metrics."""
    check_required(cfg)
    ckpt = load_checkpoint(cfg.ckpt_path)
    train_cfg = run_config(ckpt)
    if cfg.get("dataset"):
        train_cfg.dataset = cfg.dataset
    if cfg.get("data_root"):
        with open_dict(train_cfg):
            train_cfg.dataset.root = cfg.data_root
            for split in ("train", "val", "test"):
                if train_cfg.dataset.get(split) and "root" in train_cfg.dataset[split]:
                    train_cfg.dataset[split].root = cfg.data_root
    if cfg.get("batch_size"):
        train_cfg.data.val_batch_size = cfg.batch_size
    train_cfg.data.num_workers = cfg.num_workers

    datamodule = instantiate(train_cfg.data, dataset=train_cfg.dataset, augmentation=train_cfg.augmentation,
                             _recursive_=False)
    net = build_net(ckpt)
    criterion = instantiate(train_cfg.loss)
    module = instantiate(
        train_cfg.module, net=net, criterion=criterion, optimizer=None, scheduler=None,
        class_names=ckpt["segsuite"]["class_names"], lr=0.0, weight_decay=0.0,
    )
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    if cfg.split == "val":
        trainer.validate(module, datamodule=datamodule, verbose=False)
        scores = module.last_val_scores
    elif cfg.split == "test":
        trainer.test(module, datamodule=datamodule, verbose=False)
        scores = module.last_test_scores
    else:
        raise ValueError(f"split={cfg.split!r}: expected 'val' or 'test'")

    print(format_scores(f"{cfg.split} metrics of {cfg.ckpt_path}", scores, module.class_names))
    summary = {f"{cfg.split}/{k}": v for k, v in
               {"mIoU": scores["miou"], "mAcc": scores["mean_acc"], "aAcc": scores["pixel_acc"],
                "fwIoU": scores["fwiou"]}.items()}
    summary.update({f"{cfg.split}/IoU/{n}": v for n, v in zip(module.class_names, scores["iou_per_class"].tolist())})
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
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
