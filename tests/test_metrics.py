"""SegmentationMetrics against hand-worked confusion matrices."""

import math

import pytest
import torch

from segsuite.metrics import SegmentationMetrics

# 8 pixels, one ignored. Rows = ground truth, columns = prediction:
#   gt0: pred 0,1,0 -> [2,1,0];  gt1: pred 1,1,2 -> [0,2,1];  gt2: pred 0 -> [1,0,0]
TARGET = torch.tensor([[0, 0, 1, 1, 2, 255, 0, 1]])
PRED = torch.tensor([[0, 1, 1, 1, 0, 2, 0, 2]])


def _metric(num_classes=3, ignore_index=255):
    return SegmentationMetrics(num_classes, ignore_index=ignore_index)


def test_hand_worked_case():
    m = _metric()
    m.update(PRED, TARGET)
    assert m.confmat.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 0]]
    s = m.compute()
    assert s["confmat"].tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 0]]  # what evaluate writes to per_class.csv
    assert s["pixel_acc"] == pytest.approx(4 / 7)
    # IoU: 2/(3+3-2), 2/(3+3-2), 0/(1+1-0)
    assert s["iou_per_class"].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["mean_acc"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # FWIoU: ground-truth frequencies 3/7, 3/7, 1/7
    assert s["fwiou"] == pytest.approx(3 / 7 * 0.5 + 3 / 7 * 0.5 + 1 / 7 * 0.0)


def test_scores_input_equals_label_input():
    scores = torch.nn.functional.one_hot(PRED, 3).permute(0, 2, 1).float().unsqueeze(-1)  # [1,3,8,1]
    a, b = _metric(), _metric()
    a.update(scores, TARGET.unsqueeze(-1))
    b.update(PRED, TARGET)
    assert torch.equal(a.confmat, b.confmat)


def test_ignored_pixels_count_nowhere():
    m = _metric()
    target = TARGET.clone()
    pred = PRED.clone()
    pred[0, 5] = 0  # change the prediction at the ignored pixel: nothing may move
    m.update(pred, target)
    assert m.confmat.sum() == 7
    assert m.compute()["miou"] == pytest.approx(1 / 3)


def test_absent_class_excluded_from_means():
    m = _metric(num_classes=4)
    m.update(PRED, TARGET)
    s = m.compute()
    assert math.isnan(s["iou_per_class"][3])
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["mean_acc"] == pytest.approx(4 / 9)


def test_class_predicted_but_absent_from_truth_counts_as_zero_iou():
    m = _metric(num_classes=2)
    m.update(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 0, 0, 0]]))
    s = m.compute()
    assert s["iou_per_class"].tolist() == pytest.approx([0.5, 0.0])
    assert s["miou"] == pytest.approx(0.25)
    assert s["mean_acc"] == pytest.approx(0.5)  # class 1 has no ground truth: excluded
    assert s["fwiou"] == pytest.approx(0.5)


def test_updates_accumulate_and_reset():
    m = _metric()
    m.update(PRED, TARGET)
    m.update(PRED, TARGET)
    assert m.confmat.sum() == 14
    assert m.compute()["miou"] == pytest.approx(1 / 3)
    m.reset()
    assert m.confmat.sum() == 0


def test_random_case_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 16, 16), generator=g)
    target[0, :3] = 255
    pred = torch.randint(0, 5, (2, 16, 16), generator=g)
    m = SegmentationMetrics(5)
    m.update(pred, target)
    s = m.compute()
    valid = target != 255
    ious = []
    for c in range(5):
        inter = ((pred == c) & (target == c) & valid).sum().item()
        union = (((pred == c) | (target == c)) & valid).sum().item()
        ious.append(inter / union)
    assert s["iou_per_class"].tolist() == pytest.approx(ious, rel=1e-6)
    assert s["pixel_acc"] == pytest.approx(((pred == target) & valid).sum().item() / valid.sum().item())


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="shape"):
        _metric().update(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
