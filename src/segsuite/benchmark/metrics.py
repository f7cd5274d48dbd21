"""Section `metrics`: the metric update relative to a validation step, and the confusion-matrix kernel."""

from __future__ import annotations

from typing import Any

import torch

from segsuite.benchmark.losses import synthetic_masks
from segsuite.benchmark.nets import build_model
from segsuite.benchmark.timing import best_time
from segsuite.losses import CrossEntropyLoss
from segsuite.metrics import SegmentationMetrics, confusion_matrix, scores_to_labels

TARGET = 0.02  # the metric update's share of a validation step


def confusion_matrix_reference(preds: torch.Tensor, target: torch.Tensor, num_classes: int,
                               ignore_index: int) -> torch.Tensor:
    """The boolean-indexing formulation (compacts valid pixels, then bincount), for comparison."""
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[valid] * num_classes + preds[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def measure(args, device: torch.device) -> dict[str, Any]:
    """Metric update vs a validation step, both as `SegmentationModule._eval_step` runs them.

    The validation step is forward + loss + prediction (`scores_to_labels`, the argmax) + metric
    update; the prediction is computed once per batch and shared with evaluate's callbacks, so the
    metric update is the confusion-matrix accumulation from labels. The argmax, and an update that
    takes the scores (argmax inside), are reported beside it.
    """
    crop = (args.loss_crop[0], args.loss_crop[1])
    torch.manual_seed(0)
    model = build_model(args.ref_model, args.num_classes).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, *crop, device=device).contiguous(memory_format=torch.channels_last)
    target = synthetic_masks(args.batch, crop, args.num_classes).to(device)
    criterion = CrossEntropyLoss(ignore_index=255).to(device)
    metric = SegmentationMetrics(args.num_classes).to(device)
    with torch.inference_mode():
        logits = model(x).float()
    preds = scores_to_labels(logits)

    def val_step():
        with torch.inference_mode():
            out = model(x).float()
            criterion(out, target)
            metric.update(scores_to_labels(out), target)

    def update():
        with torch.inference_mode():
            metric.update(preds, target)

    def update_from_scores():
        with torch.inference_mode():
            metric.update(logits, target)

    reps = max(args.iters, 5)
    val_s = best_time(val_step, args.warmup, args.iters, device)
    update_s = best_time(update, args.warmup, reps, device)
    update_scores_s = best_time(update_from_scores, args.warmup, reps, device)
    argmax_s = best_time(lambda: scores_to_labels(logits), args.warmup, reps, device)
    cm_s = best_time(lambda: confusion_matrix(preds, target, args.num_classes, 255), args.warmup, reps, device)
    cm_ref_s = best_time(lambda: confusion_matrix_reference(preds, target, args.num_classes, 255), args.warmup,
                         reps, device)
    out = {"model": args.ref_model, "crop": list(crop), "batch": args.batch, "val_step_ms": val_s * 1e3,
           "update_ms": update_s * 1e3, "update_from_scores_ms": update_scores_s * 1e3, "argmax_ms": argmax_s * 1e3,
           "confusion_ms": cm_s * 1e3, "confusion_boolean_index_ms": cm_ref_s * 1e3, "ratio": update_s / val_s,
           "ratio_from_scores": update_scores_s / val_s}
    print(f"  metric update {out['update_ms']:.2f} ms = {out['ratio']:.2%} of a validation step "
          f"({out['val_step_ms']:.1f} ms); from scores (argmax inside) {out['update_from_scores_ms']:.2f} ms = "
          f"{out['ratio_from_scores']:.2%}; confusion {out['confusion_ms']:.2f} ms "
          f"(boolean-index form {out['confusion_boolean_index_ms']:.2f} ms)", flush=True)
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """The metric update within the target share of a validation step."""
    if "metrics" not in results:
        return []
    r = results["metrics"]
    return [(f"metric update <= {TARGET:.0%} of a validation step", f"{r['update_ms']:.2f} ms",
             f"{r['ratio']:.2%}", r["ratio"] <= TARGET)]


def render(results: dict[str, Any]) -> list[str]:
    """The metrics paragraph."""
    if "metrics" not in results:
        return []
    r = results["metrics"]
    return [(f"Metrics ({r['model']}, batch {r['batch']}, {r['crop'][0]}×{r['crop'][1]}): validation step "
             f"(forward + loss + argmax + update) {r['val_step_ms']:.1f} ms; metric update from the step's "
             f"labels {r['update_ms']:.2f} ms ({r['ratio']:.2%}; confusion matrix {r['confusion_ms']:.2f} ms, "
             f"boolean-index form {r['confusion_boolean_index_ms']:.2f} ms). The prediction (argmax) "
             f"{r['argmax_ms']:.2f} ms; an update given the scores, argmax inside, "
             f"{r['update_from_scores_ms']:.2f} ms ({r['ratio_from_scores']:.2%})."), ""]
