"""SegmentationModule: the LightningModule that trains, validates and tests any model + loss."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MaxMetric

from segsuite.inference import Inferencer
from segsuite.manifest import MANIFEST_KEY, RunManifest
from segsuite.metrics import BoundaryF1, SegmentationMetrics, scores_to_labels
from segsuite.optim import build_optimizer

log = logging.getLogger(__name__)

EXTRA_BATCH_KEYS_EXCLUDED = ("image", "mask", "name")
# What torch's BatchNorm raises in training when it gets one value per channel.
BATCHNORM_SINGLE_VALUE = "Expected more than 1 value per channel when training"
# Where a checkpoint saved right after a validation keeps that validation's scores ({"epoch", "scores"}).
VAL_SCORES_KEY = "segsuite_val"


def single_value_batchnorm_message(net: nn.Module, images: torch.Tensor) -> str:
    """Why a training batch of one image at a crop no larger than the model's stride cannot train."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    stride = int(getattr(net, "size_divisor", 1))
    return (
        f"cannot train on {n} image per device at crop {h}x{w}: the model's output stride is {stride}, so "
        f"its deepest feature map is {-(-h // stride)}x{-(-w // stride)}, and a BatchNorm layer there gets a "
        f"single value per channel, from which it cannot compute batch statistics. Train with at least 2 "
        f"images per device (data.batch_size is the global batch, divided by the number of devices) or with "
        f"a crop larger than {stride}x{stride} (dataset.crop_size=[H,W])"
    )


class SegmentationModule(pl.LightningModule):
    """Model + loss + metrics, optimizers with parameter groups, per-iteration schedulers.

    Args:
        net: the segmentation model (`net(x) -> logits` or `(logits, [aux, ...])` in training).
        criterion: the loss, `criterion(logits, target, **extras) -> scalar`.
        optimizer: partial optimizer factory (e.g. `torch.optim.SGD` with momentum bound).
        scheduler: partial schedule factory taking `(optimizer, total_steps)`, or None.
        num_classes: number of classes.
        class_names: names used in per-class metric keys (`val/IoU/<name>`).
        lr: base learning rate (head); backbone gets `lr * backbone_lr_mult`.
        weight_decay: weight decay (never applied to norms and biases).
        backbone_lr_mult: learning-rate multiplier for `net.backbone`.
        aux_weights: loss weight per auxiliary output (missing entries default to the last one).
        ignore_index: label that counts nowhere.
        channels_last: keep the model and inputs in channels_last memory format.
        compile: wrap the model with `torch.compile`.
        inference: how validation/test predict (`segsuite.inference.Inferencer`, `conf/tta/*.yaml`);
            None = one whole-image forward pass.
        run_manifest: the run's config, classes, palette and normalisation, stored in every
            checkpoint so evaluate/predict/export need nothing else (`segsuite.manifest`).
        boundary_metric: also score validation and test with the BF (boundary F1) score
            (`segsuite.metrics.BoundaryF1`; `metrics.boundary` in the configs): `<stage>/mBF`, `<stage>/BF/<name>`.
    """

    def __init__(
        self,
        net: nn.Module,
        criterion: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        backbone_lr_mult: float = 1.0,
        aux_weights: Sequence[float] = (0.4,),
        ignore_index: int = 255,
        channels_last: bool = False,
        compile: bool = False,
        inference: Inferencer | None = None,
        run_manifest: RunManifest | None = None,
        boundary_metric: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.criterion = criterion
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={num_classes}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.backbone_lr_mult = backbone_lr_mult
        self.aux_weights = list(aux_weights)
        self.ignore_index = ignore_index
        self.channels_last = channels_last
        self.compile = compile
        self.inference = inference if inference is not None else Inferencer()
        # Predicted labels of the latest validation/test batch, read by evaluate's prediction saver.
        self.last_eval_preds: torch.Tensor | None = None
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.test_metrics = SegmentationMetrics(num_classes, ignore_index)
        # the BF score (opt-in): per-image boundary counts, gathered over DDP ranks
        self.val_boundary = BoundaryF1(num_classes, ignore_index) if boundary_metric else None
        self.test_boundary = BoundaryF1(num_classes, ignore_index) if boundary_metric else None
        self.val_miou_best = MaxMetric()
        self.val_miou_best.persistent(True)  # restored on resume, so "best so far" survives
        # (step, epoch, scores) of the latest validation: a checkpoint saved at that step stores them
        # (VAL_SCORES_KEY), so the final table is read from the very checkpoint the run selects
        self.last_val: tuple[int, int, dict[str, Any]] | None = None
        self.run_manifest = run_manifest
        # What forward() calls: `net`, or its torch.compile wrapper. Kept out of the submodule
        # registry so checkpoints hold the weights once, under `net.*`, compiled or not.
        object.__setattr__(self, "_forward_net", net)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.compile and stage == "fit" and self._forward_net is self.net:
            object.__setattr__(self, "_forward_net", torch.compile(self.net))

    def on_fit_start(self) -> None:
        total = sum(p.numel() for p in self.net.parameters())
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        for logger in self.loggers:
            logger.log_hyperparams({"params/total": total, "params/trainable": trainable,
                                    "params/non_trainable": total - trainable})
        log.info("model parameters: %s total, %s trainable", f"{total:,}", f"{trainable:,}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"the model got {x.dtype} images; it takes normalised float images. Batches from "
                            f"SegDataModule are normalised in its on_after_batch_transfer: pass the datamodule "
                            f"to the Trainer (fit/validate/test(..., datamodule=dm)), not its dataloaders")
        # the configured layout (batches from the datamodule arrive channels_last)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self._forward_net(x)

    # -- steps ------------------------------------------------------------------------------------
    def _loss(self, out, target: torch.Tensor, extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = (out if isinstance(out, (tuple, list)) else (out, []))
        loss = self.criterion(logits, target, **extras)
        for i, aux_logits in enumerate(aux):
            weight = self.aux_weights[min(i, len(self.aux_weights) - 1)] if self.aux_weights else 0.0
            loss = loss + weight * self.criterion(aux_logits, target, **extras)
        return loss, logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if hasattr(self.criterion, "set_progress"):
            self.criterion.set_progress(self.global_step, max(int(self.trainer.estimated_stepping_batches), 1))
        if batch["image"].shape[0] == 0:  # every sample of the batch was bad (data.skip_bad): nothing to learn
            # a zero loss through every trainable weight, so the processes of a DDP run still step together
            return sum(p.sum() for p in self.net.parameters() if p.requires_grad) * 0.0
        extras = {k: v for k, v in batch.items() if k not in EXTRA_BATCH_KEYS_EXCLUDED}
        try:
            out = self(batch["image"])
        except (ValueError, RuntimeError) as err:  # RuntimeError: the same error raised under torch.compile
            if BATCHNORM_SINGLE_VALUE not in str(err):
                raise
            raise ValueError(single_value_batchnorm_message(self.net, batch["image"])) from err
        loss, _ = self._loss(out, batch["mask"], extras)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Any], metrics: SegmentationMetrics, stage: str) -> None:
        if batch["image"].shape[0] == 0:  # every sample of the batch was bad (data.skip_bad): nothing to score, but
            # the loss is logged with weight 0, so every DDP process syncs the same logged values at the epoch end
            self.log(f"{stage}/loss", torch.zeros((), device=self.device), on_epoch=True, sync_dist=True,
                     batch_size=0.0)
            return
        logits = self.inference(self, batch["image"])
        # the prediction is computed once: the metric and evaluate's prediction saver take the labels
        self.last_eval_preds = scores_to_labels(logits.detach())
        extras = {k: v for k, v in batch.items() if k not in EXTRA_BATCH_KEYS_EXCLUDED}
        loss = self.criterion(logits, batch["mask"], **extras)
        metrics.update(self.last_eval_preds, batch["mask"])
        if (boundary := getattr(self, f"{stage}_boundary", None)) is not None:
            boundary.update(self.last_eval_preds, batch["mask"])
        # a float batch size: Lightning syncs the epoch's summed batch sizes as a mean over the processes, which
        # floors integers (shards of 1 and 0 images would give 0 and an infinite loss; of 3 and 2, a wrong one)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=float(batch["image"].shape[0]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def _log_metrics(self, metrics: SegmentationMetrics, stage: str) -> dict[str, Any]:
        scores = metrics.compute()
        metrics.reset()
        if (boundary := getattr(self, f"{stage}_boundary", None)) is not None:
            scores.update(boundary.compute())
            boundary.reset()
        values = {
            f"{stage}/mIoU": scores["miou"], f"{stage}/mAcc": scores["mean_acc"],
            f"{stage}/aAcc": scores["pixel_acc"], f"{stage}/fwIoU": scores["fwiou"],
        }
        for name, iou in zip(self.class_names, scores["iou_per_class"].tolist()):
            values[f"{stage}/IoU/{name}"] = iou
        if "mbf" in scores:
            values[f"{stage}/mBF"] = scores["mbf"]
            values.update({f"{stage}/BF/{name}": bf
                           for name, bf in zip(self.class_names, scores["bf_per_class"].tolist())})
        self.log_dict(values, sync_dist=False)
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self._log_metrics(self.val_metrics, "val")
        self.last_val_scores = scores
        if self.trainer.sanity_checking:
            return
        self.last_val = (self.global_step, self.current_epoch, scores)
        miou = torch.tensor(scores["miou"], device=self.device)
        if not torch.isnan(miou):
            self.val_miou_best.update(miou)
        self.log("val/mIoU_best", self.val_miou_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.last_test_scores = self._log_metrics(self.test_metrics, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_manifest is not None:
            checkpoint[MANIFEST_KEY] = self.run_manifest.to_dict()
        if self.last_val is not None and self.last_val[0] == self.global_step:  # these weights' own validation
            checkpoint[VAL_SCORES_KEY] = {"epoch": self.last_val[1], "scores": self.last_val[2]}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, weights_only: bool | None = None,
                             **kwargs: Any) -> SegmentationModule:
        """The module a segsuite checkpoint (a file or a zoo name, e.g. `camvid_enet`) was saved from.

        Rebuilt from the run manifest every segsuite checkpoint stores (`checkpoint["segsuite"]`: model,
        loss, optimizer and schedule configs, classes), not from Lightning's `hyper_parameters` (the module
        takes built objects, which no hyperparameter record can hold), so zoo checkpoints load too.
        `kwargs` replace constructor arguments; checkpoints are always read with `weights_only=True`.
        """
        if hparams_file is not None:
            raise ValueError("hparams_file is not used: a segsuite checkpoint carries its own config")
        from segsuite.build import module_from_checkpoint  # the assembly layer (it imports this module)

        return module_from_checkpoint(checkpoint_path, map_location=map_location, strict=strict, **kwargs)

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        factory = self.optimizer_factory
        if (self._trainer is not None and self.trainer.gradient_clip_val
                and getattr(factory, "keywords", {}).get("fused")):
            # Lightning refuses to clip the gradients of a fused optimizer (it unscales them itself)
            log.info("trainer.gradient_clip_val is set: the optimizer runs unfused")
            factory = functools.partial(factory, fused=False)
        optimizer = build_optimizer(factory, self.net, self.lr, self.weight_decay, self.backbone_lr_mult)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
