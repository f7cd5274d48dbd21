"""Printing metric summaries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def format_scores(title: str, scores: Mapping, class_names: Sequence[str]) -> str:
    """A per-class IoU/accuracy (and BF, when scored) table followed by the summary metrics."""
    width = max([len(n) for n in class_names] + [5])
    boundary = scores.get("bf_per_class")
    lines = [title, f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}" + (f"  {'BF':>7}" if boundary is not None else "")]
    ious = scores["iou_per_class"].tolist()
    accs = scores.get("acc_per_class")
    accs = accs.tolist() if accs is not None else [math.nan] * len(ious)
    bfs = boundary.tolist() if boundary is not None else [None] * len(ious)
    for name, iou, acc, bf in zip(class_names, ious, accs, bfs):
        row = f"{name:<{width}}  {_pct(iou):>7}  {_pct(acc):>7}"
        lines.append(row + (f"  {_pct(bf):>7}" if bf is not None else ""))
    lines.append(
        f"aAcc {_pct(scores['pixel_acc'])}  mAcc {_pct(scores['mean_acc'])}  "
        f"mIoU {_pct(scores['miou'])}  fwIoU {_pct(scores['fwiou'])}"
        + (f"  mBF {_pct(scores['mbf'])}" if boundary is not None else "")
    )
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"
