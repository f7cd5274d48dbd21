"""Prediction entry point: `python -m segsuite.predict ckpt_path=... input=<file|dir|glob> [output=...]`.

`ckpt_path` is a checkpoint file or a zoo name (`camvid_enet`). Needs the checkpoint only (model
config, class names, palette and normalisation are stored in it; no dataset). For every readable
image writes `<stem>_mask.png` (palette PNG: pixel values are class ids, viewers show class
colours) and `<stem>_overlay.png` (mask blended over the image). Images of equal size are batched;
predictions use the `Predictor` of `segsuite.load` (`tta=`), so both give the same masks. An unreadable
image is reported by name and skipped; existing outputs are never replaced without `overwrite=true`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from segsuite.checkpoint import load_checkpoint
from segsuite.prediction import Predictor, check_images, find_images, output_paths, predict_files
from segsuite.utils.config import check_required
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.runtime import apply_runtime_settings
from segsuite.utils.task_wrapper import run_task

register_resolvers()  # the help's ${segsuite_help:...}
log = logging.getLogger("segsuite.predict")


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image of `cfg.input`; return {"written": [...], "skipped": {path: reason}}."""
    check_required(cfg)
    apply_runtime_settings(cfg)
    found = find_images(str(cfg.input), cfg.extensions)
    out_dir = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / "predictions"
    targets = output_paths(found, out_dir)
    existing = [p for pair in targets.values() for p in pair if p.exists()]
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{existing[0]} already exists ({len(existing)} output file(s) would be replaced); "
                              f"pass overwrite=true or choose another output=")
    images, bad = check_images(found, str(cfg.data.verify), bool(cfg.data.skip_bad))  # as training checks its data
    targets = {image: targets[image] for image in images}
    # the same Predictor as segsuite.load: the Python API and this command give the same masks
    predictor = Predictor.from_checkpoint(load_checkpoint(cfg.ckpt_path), cfg.device, cfg.tta, int(cfg.batch_size))
    manifest, device = predictor.manifest, predictor.device
    log.info("predicting %d image(s) with %s on %s into %s", len(images), manifest.describe(), device, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = predict_files(predictor, targets, manifest.palette, int(cfg.batch_size),
                                     float(cfg.overlay_alpha), bool(cfg.progress_bar), log, bool(cfg.data.skip_bad))
    skipped = {**bad, **skipped}
    print(f"predicted {len(written)} of {len(found)} image(s) into {out_dir.resolve()}")
    if skipped:
        print(f"skipped {len(skipped)} bad image(s) (data.skip_bad=true):\n  "
              + "\n  ".join(skipped[path] for path in sorted(skipped)))
    if not written:
        raise RuntimeError(f"no image of input={cfg.input} could be read")
    return {"written": [str(p) for p in written], "skipped": skipped}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: a failure prints one line (traceback: `HYDRA_FULL_ERROR=1`) and leaves no empty run dir."""
    run_task(predict, cfg, log)


if __name__ == "__main__":
    main()
