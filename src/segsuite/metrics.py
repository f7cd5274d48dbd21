"""Segmentation metrics over one confusion matrix (torchmetrics, reduced across DDP ranks)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def scores_to_labels(scores: torch.Tensor) -> torch.Tensor:
    """Per-pixel class of `[N,C,H,W]` scores: the first maximal channel, as `argmax(dim=1)`.

    `max(dim=1).indices` returns the same indices and is ~3x faster than `argmax` on CPU for NCHW.
    """
    return scores.max(dim=1).indices


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """C x C counts, rows = ground truth, columns = prediction; ignored pixels are skipped.

    Ignored pixels are sent to an extra overflow bin (`torch.where`, no boolean indexing: no
    compaction copy, no host-device sync for the index size) and the arithmetic runs in int32
    (indices stay below C*C+1): about 10x faster on CPU than indexing int64 tensors.
    """
    bins = num_classes * num_classes
    dtype = torch.int32 if bins < 2**31 - 1 else torch.int64
    target = target.to(dtype)
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = torch.where(valid, target * num_classes + preds.to(dtype), bins)
    return torch.bincount(index.flatten(), minlength=bins + 1)[:bins].reshape(num_classes, num_classes)


def scores_from_confusion(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixel accuracy, mean accuracy, mIoU, FWIoU and per-class IoU from a confusion matrix.

    Classes with an empty union (absent from ground truth and never predicted) get IoU NaN and
    are left out of the means; mean accuracy skips classes absent from the ground truth. FWIoU
    weights each class's IoU by its ground-truth pixel frequency.
    """
    cm = confmat.double()
    tp = cm.diag()
    gt = cm.sum(dim=1)
    pred = cm.sum(dim=0)
    total = cm.sum()
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
    freq = gt / total.clamp(min=1)
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    return {
        "pixel_acc": tp.sum() / total if total > 0 else nan,
        "mean_acc": acc.nanmean(),
        "miou": iou.nanmean(),
        "fwiou": (freq[gt > 0] * iou[gt > 0]).sum() if total > 0 else nan,
        "iou_per_class": iou.float(),
        "acc_per_class": acc.float(),
    }


class SegmentationMetrics(Metric):
    """Pixel accuracy, mean accuracy, mIoU, FWIoU and per-class IoU from one confusion matrix.

    `update(preds, target)` takes scores `[N,C,H,W]` (arg-maxed) or labels `[N,H,W]`, and targets
    `[N,H,W]` with `ignore_index` for pixels that do not count. `compute()` returns floats for
    `pixel_acc`, `mean_acc`, `miou`, `fwiou`, tensors `iou_per_class`, `acc_per_class`, and the
    `confmat` they come from (summed over DDP ranks, on the CPU; rows = ground truth).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"scores have {preds.shape[1]} channels but the metric has {self.num_classes} classes")
            preds = scores_to_labels(preds)
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} does not match target shape {tuple(target.shape)}")
        self.confmat += confusion_matrix(preds.long(), target.long(), self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, float | torch.Tensor]:
        scores = scores_from_confusion(self.confmat)
        return {**{k: (v.item() if v.ndim == 0 else v) for k, v in scores.items()},
                "confmat": self.confmat.detach().clone().cpu()}
