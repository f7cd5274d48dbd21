"""A fixed set of validation images with predicted and ground-truth masks, every validation epoch."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from segsuite.callbacks.targets import (
    ValidationCounter,
    tensorboard_loggers,
    visual_loggers,
    wandb_loggers,
)
from segsuite.metrics import scores_to_labels
from segsuite.utils.visualize import colorize, denormalise, image_grid

log = logging.getLogger(__name__)


class ValidationImageLogger(pl.Callback):
    """Logs `num_images` fixed validation images with their predicted and ground-truth masks.

    W&B gets mask overlays with class names (`wandb.Image(..., masks={"prediction", "ground_truth"})`);
    TensorBoard gets one grid, a row per image: image | ground truth | prediction, in the dataset's
    palette (ignored pixels white). The images are spread evenly over the validation split and are
    the same every epoch; they cost one forward pass each on rank zero, nothing else. With no W&B
    or TensorBoard logger the callback does nothing.

    Args:
        num_images: how many validation images to show.
        every_n_epochs: log on every n-th validation.
        key: the name under which the images are logged.
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1, key: str = "val/examples") -> None:
        if num_images < 1:
            raise ValueError(f"callbacks.val_images: num_images ({num_images}) must be >= 1")
        self.num_images = num_images
        self.schedule = ValidationCounter(every_n_epochs, "callbacks.val_images")
        self.key = key

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.schedule.due(trainer) or not trainer.is_global_zero or not visual_loggers(trainer):
            return
        samples = self.predict_samples(trainer, pl_module)
        for logger in wandb_loggers(trainer):
            self._log_wandb(logger, samples, trainer)
        for logger in tensorboard_loggers(trainer):
            grid = image_grid([[s["image"], s["gt_rgb"], s["pred_rgb"]] for s in samples])
            logger.experiment.add_image(self.key, grid, global_step=trainer.global_step, dataformats="HWC")

    # -- helpers ----------------------------------------------------------------------------------
    def sample_indices(self, dataset_size: int) -> list[int]:
        """`num_images` indices spread evenly over the split (fixed across epochs)."""
        count = min(self.num_images, dataset_size)
        return sorted({int(i) for i in np.linspace(0, dataset_size - 1, count).round()})

    @torch.no_grad()
    def predict_samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        """Predict the fixed images; return image, masks and coloured masks per image."""
        datamodule = trainer.datamodule
        if datamodule is None or "val" not in getattr(datamodule, "datasets", {}):
            raise RuntimeError("callbacks.val_images needs a SegDataModule with a built 'val' split "
                               "(trainer.fit/validate(..., datamodule=...)); remove it with ~callbacks.val_images")
        dataset = datamodule.datasets["val"]
        mean, std = _normalisation(pl_module, datamodule)
        palette, ignore = datamodule.palette, int(getattr(pl_module, "ignore_index", 255))
        was_training = pl_module.training
        pl_module.eval()
        samples = []
        try:
            for index in self.sample_indices(len(dataset)):
                item = dataset[index]
                if "skipped" in item:  # a bad sample left out (data.skip_bad); the run names it
                    continue
                image = item["image"].unsqueeze(0).to(pl_module.device)
                if image.dtype == torch.uint8:  # normalised on the device (data.normalize_on_device)
                    image = datamodule.to_model_input({"image": image})["image"]
                with trainer.precision_plugin.forward_context():
                    # the module's validation-time inference (sliding window / TTA) where it has one
                    infer = getattr(pl_module, "inference", None)
                    out = infer(pl_module, image) if callable(infer) else pl_module(image)
                logits = out[0] if isinstance(out, (tuple, list)) else out
                pred = scores_to_labels(logits)[0].cpu().numpy()
                gt = item["mask"].cpu().numpy()
                samples.append({
                    "name": str(item.get("name", index)), "image": display_image(item["image"], mean, std),
                    "pred": pred, "gt": gt,
                    "pred_rgb": colorize(pred, palette, ignore), "gt_rgb": colorize(gt, palette, ignore),
                })
        finally:
            pl_module.train(was_training)
        return samples

    def _log_wandb(self, logger, samples: list[dict[str, Any]], trainer: pl.Trainer) -> None:
        import wandb

        labels = {i: name for i, name in enumerate(trainer.datamodule.class_names)}
        ignore = int(getattr(trainer.lightning_module, "ignore_index", 255))
        labels[ignore] = "ignore"
        images = [
            wandb.Image(s["image"], caption=s["name"], masks={
                "prediction": {"mask_data": _mask_array(s["pred"]), "class_labels": labels},
                "ground_truth": {"mask_data": _mask_array(s["gt"]), "class_labels": labels},
            })
            for s in samples
        ]
        logger.log_metrics({self.key: images}, step=trainer.global_step)


def display_image(image: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """A dataset item's `[3,H,W]` image as `[H,W,3]` uint8 RGB (uint8 as shipped, or denormalised)."""
    if image.dtype == torch.uint8:
        return image.permute(1, 2, 0).contiguous().numpy()
    return denormalise(image, mean, std)


def _normalisation(pl_module: pl.LightningModule, datamodule) -> tuple[list[float], list[float]]:
    manifest = getattr(pl_module, "run_manifest", None)
    if manifest is not None:
        return list(manifest.mean), list(manifest.std)
    cfg = datamodule.dataset_cfg
    return list(cfg.mean), list(cfg.std)


def _mask_array(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.int32)
