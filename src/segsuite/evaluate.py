"""Evaluation entry point: `python -m segsuite.evaluate ckpt_path=... [dataset=...] [split=val|test] [tta=...]`.

Rebuilds model, loss and data from the config stored in the checkpoint (the dataset can be
replaced; `segsuite.build.build_evaluation`), predicts with the shared `Inferencer`
(`tta=none|flip|multiscale|slide`) inside the Lightning validation/test loop, prints a per-class
table and the summary, and writes into its run directory: `metrics.json`, `per_class.csv`,
`confusion_matrix.png` and, with `save_predictions=true`, palette PNGs (plus Cityscapes labelId
PNGs for the benchmark server).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from segsuite.build import build_evaluation
from segsuite.checkpoint import load_checkpoint
from segsuite.evaluation import check_output_dir, prediction_writers, summarise, write_outputs
from segsuite.run_records import report_skipped
from segsuite.utils.config import check_required
from segsuite.utils.paths import config_dir
from segsuite.utils.reporting import format_scores
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.runtime import apply_runtime_settings
from segsuite.utils.task_wrapper import run_task

register_resolvers()
log = logging.getLogger("segsuite.evaluate")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.ckpt_path` on `cfg.split` with `cfg.tta`; return the summary metrics."""
    check_required(cfg)
    apply_runtime_settings(cfg)
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split={cfg.split!r}: expected 'val' or 'test'")
    out = Path(cfg.paths.output_dir)
    check_output_dir(out, cfg.overwrite)
    ckpt = load_checkpoint(cfg.ckpt_path)
    datamodule, module = build_evaluation(cfg, ckpt)
    manifest, inferencer = module.run_manifest, module.inference
    dataset_name = str(datamodule.dataset_cfg.get("name", ""))
    log.info("evaluating %s (%s) on %s/%s with %s", cfg.ckpt_path, manifest.describe(), dataset_name, cfg.split,
             inferencer)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=False, callbacks=prediction_writers(
        cfg.save_predictions, out, manifest.palette, dataset_name))
    if cfg.split == "val":
        trainer.validate(module, datamodule=datamodule, verbose=False)
        scores = module.last_val_scores
    else:
        trainer.test(module, datamodule=datamodule, verbose=False)
        scores = module.last_test_scores

    names = module.class_names
    print(format_scores(f"{cfg.split} metrics of {cfg.ckpt_path} (tta: {inferencer})", scores, names))
    summary = summarise(cfg.split, scores, names)
    stored = {**summary, "ckpt_path": str(cfg.ckpt_path), "tta": OmegaConf.to_container(cfg.tta, resolve=True),
              "skipped_bad_samples": report_skipped(datamodule.skipped_everywhere())}
    write_outputs(out, stored, scores, names, title=f"{dataset_name} {cfg.split}: confusion matrix (rows normalised)")
    print(f"{cfg.split}/mIoU: {scores['miou']:.4f}")
    print(f"run directory: {out.resolve()}")
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: a failure prints one line (traceback: `HYDRA_FULL_ERROR=1`) and leaves no empty run dir."""
    run_task(evaluate, cfg, log)


if __name__ == "__main__":
    main()
