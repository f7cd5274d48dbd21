"""Prediction entry point: `python -m segsuite.predict ckpt_path=... input=<file|dir|glob> [output=...]`.

Needs the checkpoint only (model config, class names, palette and normalisation are stored in it;
no dataset). For every readable image writes `<stem>_mask.png` (palette PNG: pixel values are
class ids, viewers show class colours) and `<stem>_overlay.png` (mask blended over the image).
Images of equal size are batched; predictions use the shared `Inferencer` (`tta=`). An unreadable
image is reported by name and skipped; existing outputs are never replaced without `overwrite=true`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from segsuite.checkpoint import build_net, load_checkpoint
from segsuite.inference import build_inferencer
from segsuite.manifest import RunManifest
from segsuite.prediction import Predictor, find_images, output_paths, predict_files
from segsuite.utils.config import check_required
from segsuite.utils.paths import config_dir
from segsuite.utils.runtime import apply_runtime_settings

log = logging.getLogger("segsuite.predict")


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image of `cfg.input`; return {"written": [...], "skipped": {path: reason}}."""
    check_required(cfg)
    apply_runtime_settings(cfg)
    images = find_images(str(cfg.input), cfg.extensions)
    out_dir = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / "predictions"
    targets = output_paths(images, out_dir)
    existing = [p for pair in targets.values() for p in pair if p.exists()]
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{existing[0]} already exists ({len(existing)} output file(s) would be replaced); "
                              f"pass overwrite=true or choose another output=")
    ckpt = load_checkpoint(cfg.ckpt_path)
    manifest = RunManifest.from_checkpoint(ckpt)
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    inferencer = build_inferencer(cfg.tta, manifest.config["dataset"].get("crop_size"))
    predictor = Predictor(build_net(ckpt), manifest.mean, manifest.std, inferencer, device)
    log.info("predicting %d image(s) with %s on %s into %s", len(images), manifest.describe(), device, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = predict_files(predictor, targets, manifest.palette, int(cfg.batch_size),
                                     float(cfg.overlay_alpha), bool(cfg.progress_bar), log)
    print(f"predicted {len(written)} of {len(images)} image(s) into {out_dir.resolve()}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): " + ", ".join(sorted(skipped)))
    if not written:
        raise RuntimeError(f"no image of input={cfg.input} could be read")
    return {"written": [str(p) for p in written], "skipped": skipped}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    predict(cfg)


if __name__ == "__main__":
    main()
