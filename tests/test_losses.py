"""Each loss against values worked out by hand and against the paper's formula written here."""

from __future__ import annotations

import inspect
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from scipy.ndimage import distance_transform_edt

from segsuite.losses import (
    BoundaryLoss,
    CEDiceLoss,
    ComboLoss,
    CrossEntropyLoss,
    DiceLoss,
    DistancePenalizedCELoss,
    ExpLogLoss,
    FocalLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    HausdorffDTLoss,
    IoULoss,
    LovaszSoftmaxLoss,
    SumLoss,
    TverskyLoss,
)

IGNORE = 255


def case(seed=0, n=2, c=3, h=5, w=6, ignore=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[target == 2] = 0 if seed % 2 else 2  # odd seeds: class 2 absent
    if ignore:
        target[:, 0, :2] = IGNORE
    return logits, target


def np_parts(logits, target, c):
    """Softmax probs and one-hot as numpy [N,C,H,W], valid [N,H,W] (independent of the library)."""
    z = logits.double().numpy()
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    t = target.numpy()
    valid = t != IGNORE
    g = np.stack([(t == k) for k in range(c)], 1).astype(float)
    return p * valid[:, None], g, valid


# -- distribution ---------------------------------------------------------------------------------
def test_ce_hand_value():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    loss = CrossEntropyLoss()(logits, torch.tensor([[[1]]]))
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ce_matches_torch_with_weights_smoothing_ignore(smoothing):
    logits, target = case(seed=2)
    weight = [0.5, 2.0, 1.5]
    ours = CrossEntropyLoss(weight=weight, label_smoothing=smoothing)(logits, target)
    ref = F.cross_entropy(logits, target, weight=torch.tensor(weight), ignore_index=IGNORE, label_smoothing=smoothing)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_focal_hand_value_and_gamma_zero_is_ce():
    # two pixels: p_y = 0.75 and p_y = 0.5 (C=2): FL = -(1/4)^2 ln .75 and -(1/2)^2 ln .5, mean
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    expected = (-(0.25 ** 2) * math.log(0.75) - (0.5 ** 2) * math.log(0.5)) / 2
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # alpha-weighted: sum alpha_y FL / sum alpha_y
    alpha = [3.0, 1.0]
    expected_w = (1.0 * -(0.25 ** 2) * math.log(0.75) + 3.0 * -(0.5 ** 2) * math.log(0.5)) / 4.0
    assert FocalLoss(gamma=2.0, weight=alpha)(logits, target).item() == pytest.approx(expected_w, rel=1e-6)
    lg, tg = case(seed=3)
    assert torch.allclose(FocalLoss(gamma=0.0)(lg, tg), F.cross_entropy(lg, tg, ignore_index=IGNORE), atol=1e-6)


def test_dpce_hand_value():
    # one row [0 0 1 1]: label change between columns 1 and 2, so d = [1 0 0 1], D = 1 - d/1
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.zeros(1, 2, 1, 4)  # CE = ln 2 everywhere
    expected = np.mean([1 + 0, 1 + 1, 1 + 1, 1 + 0]) * math.log(2)
    assert DistancePenalizedCELoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)
    expected_scaled = np.mean([1, 3, 3, 1]) * math.log(2)
    assert DistancePenalizedCELoss(penalty_scale=2.0)(logits, target).item() == pytest.approx(expected_scaled, rel=1e-6)


# -- region ---------------------------------------------------------------------------------------
def reference_region(logits, target, c, score, per_image, classes, smooth=1.0):
    """Mean over counted classes of 1 - score(tp, fp, fn) with smoothing, written from the papers."""
    p, g, _ = np_parts(logits, target, c)
    axes = (2, 3) if per_image else (0, 2, 3)
    tp, ps, gs = (p * g).sum(axes), p.sum(axes), g.sum(axes)
    fp, fn = ps - tp, gs - tp
    losses = 1.0 - score(tp, fp, fn, smooth)
    counted = gs > 0 if classes == "present" else np.ones_like(gs, dtype=bool)
    if not per_image:
        return losses[counted].mean()
    return np.mean([row[m].mean() for row, m in zip(losses, counted) if m.any()])


def dice_score(tp, fp, fn, s):
    return (2 * tp + s) / (2 * tp + fp + fn + s)


def iou_score(tp, fp, fn, s):
    return (tp + s) / (tp + fp + fn + s)


def tversky_score(alpha, beta):
    return lambda tp, fp, fn, s: (tp + s) / (tp + alpha * fp + beta * fn + s)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("seed", [0, 1])
def test_dice_iou_tversky_match_formulas(per_image, classes, seed):
    logits, target = case(seed=seed)
    kw = {"per_image": per_image, "classes": classes}
    for loss, score in [(DiceLoss(**kw), dice_score), (IoULoss(**kw), iou_score),
                        (TverskyLoss(alpha=0.2, beta=0.8, **kw), tversky_score(0.2, 0.8))]:
        ref = reference_region(logits, target, 3, score, per_image, classes)
        assert loss(logits, target).item() == pytest.approx(ref, rel=1e-5), type(loss).__name__


def monai_batch_dice(logits, target, c, smooth_nr, smooth_dr):
    """MONAI `DiceLoss(softmax=True, to_onehot_y=True, batch=True)` (include_background, mean),
    written from its formula: per class, sums over batch and pixels, 1 - (2 I + s_nr) / (P + G + s_dr),
    then the mean over every class."""
    p, g, _ = np_parts(logits, target, c)
    inter, pred, ground = (p * g).sum((0, 2, 3)), p.sum((0, 2, 3)), g.sum((0, 2, 3))
    return np.mean(1.0 - (2.0 * inter + smooth_nr) / (pred + ground + smooth_dr))


@pytest.mark.parametrize("smooth", [1.0, 1e-5])  # ours (1) and MONAI's default smooth_nr = smooth_dr = 1e-5
@pytest.mark.parametrize("seed", [0, 1])  # seed 1: class 2 absent from the batch
def test_dice_all_classes_equals_monai_batch_dice(smooth, seed):
    logits, target = case(seed=seed, c=4, h=7, w=9, ignore=False)
    expected = monai_batch_dice(logits, target, 4, smooth, smooth)
    assert DiceLoss(smooth=smooth, classes="all")(logits, target).item() == pytest.approx(expected, rel=1e-6)
    if seed == 1:  # the default ("present") skips the absent class instead
        assert DiceLoss(smooth=smooth)(logits, target).item() != pytest.approx(expected, rel=1e-3)


def test_dice_all_classes_equals_monai_itself():
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = case(seed=1, c=4, h=7, w=9, ignore=False)
    theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    expected = theirs(logits.double(), target.unsqueeze(1)).item()
    assert DiceLoss(classes="all")(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_hand_value():
    # one image, two pixels, C=2, probabilities exactly [0.5, 0.5] everywhere, labels [0, 1]:
    # class k: TP = 0.5, sum p = 1, sum g = 1 -> Dice = (1 + 1) / (2 + 1) = 2/3 with smooth 1
    loss = DiceLoss()(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]]))
    assert loss.item() == pytest.approx(1 - 2 / 3, rel=1e-6)
    # Tversky 0.5/0.5: (TP + s) / (TP + (FP + FN) / 2 + s) = 1.5 / 2 -> loss 1/4 (Dice with smooth 2s)
    logits, target = torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]])
    assert TverskyLoss(alpha=0.5, beta=0.5)(logits, target).item() == pytest.approx(0.25)
    assert TverskyLoss(alpha=0.5, beta=0.5, smooth=0.5)(logits, target).item() == pytest.approx(1 / 3)


def test_focal_tversky_matches_formula():
    logits, target = case(seed=4)
    p, g, _ = np_parts(logits, target, 3)
    tp, ps, gs = (p * g).sum((0, 2, 3)), p.sum((0, 2, 3)), g.sum((0, 2, 3))
    ti = (tp + 1) / (tp + 0.3 * (ps - tp) + 0.7 * (gs - tp) + 1)
    expected = ((1 - ti[gs > 0]) ** 0.75).mean()
    assert (FocalTverskyLoss(gamma=4 / 3, alpha=0.3, beta=0.7)(logits, target).item()
            == pytest.approx(expected, rel=1e-5))


@pytest.mark.parametrize("classes", ["present", "all"])
def test_generalized_dice_matches_sudre(classes):
    logits, target = case(seed=1)  # class 2 absent
    p, g, _ = np_parts(logits, target, 3)
    tp, ps, gs = (p * g).sum((0, 2, 3)), p.sum((0, 2, 3)), g.sum((0, 2, 3))
    w = np.array([1 / x ** 2 if x > 0 else 0.0 for x in gs])
    if classes == "all":
        w[gs == 0] = w.max()
    w = w / w.sum()
    expected = 1 - (2 * (w * tp).sum() + 1) / ((w * (ps + gs)).sum() + 1)
    assert GeneralizedDiceLoss(classes=classes)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def lovasz_by_integral(errors: np.ndarray, fg: np.ndarray) -> float:
    """Lovász extension as the Choquet integral  int_0^inf Delta_J({i : m_i >= t}) dt, where
    Delta_J(M) = |M| / |G u M| is the Jaccard loss of the set M of mispredicted pixels."""
    levels = np.unique(np.concatenate([[0.0], errors]))
    total = 0.0
    for lo, hi in itertools.pairwise(levels):
        mispredicted = errors >= hi
        union = np.logical_or(fg, mispredicted).sum()
        total += (hi - lo) * (mispredicted.sum() / union if union else 0.0)
    return total


def test_lovasz_equals_the_choquet_integral_on_a_hand_case():
    # one image 1x4, C=2: probabilities of class 1 = [0.9, 0.6, 0.3, 0.2], labels [1, 0, 1, 0]
    p1 = torch.tensor([0.9, 0.6, 0.3, 0.2])
    logits = torch.stack([torch.zeros(4), torch.log(p1 / (1 - p1))]).view(1, 2, 1, 4)
    target = torch.tensor([[[1, 0, 1, 0]]])
    fg1 = np.array([1, 0, 1, 0], bool)
    e1 = np.abs(fg1 - p1.numpy().astype(float))
    e0 = np.abs((~fg1) - (1 - p1.numpy().astype(float)))
    expected = (lovasz_by_integral(e0, ~fg1) + lovasz_by_integral(e1, fg1)) / 2
    # by hand for class 1: errors [.1 .6 .7 .2]; sorted .7(fg) .6(bg) .2(bg) .1(fg); Jaccard loss
    # |M| / |G u M| of the growing prefixes: 1/2, 2/3, 3/4, 4/4 -> .7/2 + .6/6 + .2/12 + .1/4
    assert lovasz_by_integral(e1, fg1) == pytest.approx(0.7 / 2 + 0.6 / 6 + 0.2 / 12 + 0.1 / 4)
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_matches_integral_on_random_batch(per_image, classes):
    logits, target = case(seed=1)  # with ignored pixels and an absent class
    p, g, valid = np_parts(logits, target, 3)
    groups = [slice(i, i + 1) for i in range(p.shape[0])] if per_image else [slice(None)]
    per_group = []
    for sl in groups:
        v = valid[sl].ravel()
        vals = []
        for k in range(3):
            fg = g[sl, k].ravel()[v].astype(bool)
            if classes == "present" and not fg.any():
                continue
            vals.append(lovasz_by_integral(np.abs(fg - p[sl, k].ravel()[v]), fg))
        if vals:
            per_group.append(np.mean(vals))
    loss = LovaszSoftmaxLoss(per_image=per_image, classes=classes)(logits, target)
    assert loss.item() == pytest.approx(np.mean(per_group), rel=1e-5)


# -- boundary -------------------------------------------------------------------------------------
def kervadec_boundary_term(logits, target, c):
    """L_B from the paper / the authors' `one_hot2dist`: phi = edt(outside) outside, -(edt(inside) - 1)
    inside (scipy), times the softmax, mean over the (image, present class, non-ignored pixel) triples."""
    p, _, valid = np_parts(logits, target, c)
    t = target.numpy()
    total, count = 0.0, 0
    for n in range(t.shape[0]):
        for k in range(c):
            pos = t[n] == k
            if not pos.any():
                continue
            phi = distance_transform_edt(~pos) * ~pos - (distance_transform_edt(pos) - 1) * pos
            total += (phi * p[n, k])[valid[n]].sum()
            count += valid[n].sum()
    return total / count


def test_boundary_term_hand_value():
    # row [0 0 1 1 1]: phi_0 = [-1 0 1 2 3], phi_1 = [2 1 0 -1 -2]; probabilities 1/2 everywhere:
    # mean over 2 classes x 5 pixels of phi * 1/2 = (5 + 0) / 10 / 2 = 0.25
    assert BoundaryLoss()(torch.zeros(1, 2, 1, 5), torch.tensor([[[0, 0, 1, 1, 1]]])).item() == pytest.approx(0.25)


@pytest.mark.parametrize(("seed", "c"), [(5, 3), (12, 5)])
def test_boundary_loss_alone_is_the_papers_term(seed, c):
    logits, target = case(seed=seed, c=c, h=9, w=11)
    expected = kervadec_boundary_term(logits, target, c)
    loss = BoundaryLoss()
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-3)  # float16 maps
    # the schedule belongs to the combination: alone, progress changes nothing (w_B = 1 throughout)
    for step in (0, 30, 100):
        loss.set_progress(step, 100)
        assert loss.weights() == (0.0, 1.0)
        assert loss(logits, target).item() == pytest.approx(expected, rel=1e-3)


def test_boundary_schedule_and_region_combination():
    logits, target = case(seed=6)
    region = GeneralizedDiceLoss()
    pure = BoundaryLoss()(logits, target)
    gdl = region(logits, target)
    default = BoundaryLoss(region=region)  # the paper's rebalance, w_B from 0.01
    assert default(logits, target).item() == pytest.approx((0.99 * gdl + 0.01 * pure).item(), rel=1e-5)
    loss = BoundaryLoss(region=region, schedule="rebalance", start=0.01, end=0.99, ramp_fraction=0.5)
    for step, w_b in [(0, 0.01), (25, 0.5), (50, 0.99), (90, 0.99)]:
        loss.set_progress(step, 100)
        assert loss.weights() == pytest.approx((1 - w_b, w_b))
        assert loss(logits, target).item() == pytest.approx(((1 - w_b) * gdl + w_b * pure).item(), rel=1e-5)
    inc = BoundaryLoss(region=region, schedule="increase", start=0.1, end=0.5, ramp_fraction=1.0)
    inc.set_progress(50, 100)
    assert inc.weights() == pytest.approx((1.0, 0.3))


# -- Hausdorff ------------------------------------------------------------------------------------
def karimi_field(mask: np.ndarray) -> np.ndarray:
    """Karimi's / MONAI's distance field edt(fg) + edt(bg); zero without a boundary."""
    if not mask.any() or mask.all():
        return np.zeros(mask.shape)
    return distance_transform_edt(mask) + distance_transform_edt(~mask)


def karimi_fields(logits, target, c, alpha):
    """Per class: d_G^alpha + d_P^alpha [N,C,H,W], with the prediction thresholded at p > 0.5 and
    ignored pixels as "not this class" in both."""
    p, _, valid = np_parts(logits, target, c)
    t = target.numpy()
    return np.stack([np.stack([karimi_field(t[n] == k) ** alpha + karimi_field((p[n, k] > 0.5) & valid[n]) ** alpha
                               for k in range(c)]) for n in range(t.shape[0])])


def karimi_loss(logits, target, c, alpha=2.0, weight=None):
    """mean over non-ignored pixels and classes (weighted mean with `weight`) of (g - p)^2 (d_G^a + d_P^a)."""
    p, g, valid = np_parts(logits, target, c)
    w = np.ones(c) if weight is None else np.asarray(weight, float)
    terms = (g - p) ** 2 * karimi_fields(logits, target, c, alpha) * w[None, :, None, None]
    return terms.transpose(0, 2, 3, 1)[valid].sum() / (valid.sum() * w.sum())


def confident_case(seed, c, h, w):
    """Logits whose softmax crosses 0.5 on a good share of pixels, so the prediction has boundaries."""
    logits, target = case(seed=seed, c=c, h=h, w=w)
    labels = torch.where(target == IGNORE, 0, target).roll(1, dims=2)
    return logits + 4.0 * F.one_hot(labels, c).permute(0, 3, 1, 2), target


@pytest.mark.parametrize("alpha", [2.0, 1.0])
@pytest.mark.parametrize(("seed", "c"), [(7, 3), (8, 4), (13, 6)])
def test_hausdorff_matches_karimi_per_class_formula(alpha, seed, c):
    for logits, target in (case(seed=seed, c=c, h=10, w=13), confident_case(seed, c, 10, 13)):
        expected = karimi_loss(logits, target, c, alpha)
        # GT fields travel as float16 (worker maps): ~1e-4 relative
        assert HausdorffDTLoss(alpha=alpha)(logits, target).item() == pytest.approx(expected, rel=1e-3)


def test_hausdorff_class_weights_and_no_ignore():
    logits, target = confident_case(9, 4, 9, 12)
    target = torch.where(target == IGNORE, 1, target)
    weight = [1.0, 3.0, 0.5, 2.0]
    assert HausdorffDTLoss(weight=weight)(logits, target).item() == pytest.approx(
        karimi_loss(logits, target, 4, weight=weight), rel=1e-3)


def test_hausdorff_gradient_flows_as_the_formula():
    logits, target = confident_case(10, 4, 9, 12)
    ours = logits.clone().requires_grad_(True)
    HausdorffDTLoss()(ours, target).backward()
    # the same formula in torch with the scipy fields as constants
    ref = logits.clone().requires_grad_(True)
    valid = (target != IGNORE).unsqueeze(1)
    onehot = F.one_hot(torch.where(valid[:, 0], target, 0), 4).permute(0, 3, 1, 2) * valid
    fields = torch.from_numpy(karimi_fields(logits, target, 4, 2.0)).float()
    ((ref.softmax(1) - onehot) ** 2 * fields * valid).sum().div(valid.sum() * 4).backward()
    assert ours.grad.abs().sum() > 0 and torch.isfinite(ours.grad).all()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-3, atol=1e-6)
    assert ours.grad.masked_select(~valid).abs().max() == 0


def test_hausdorff_two_classes_hand_value():
    # row [0 0 1 1], p = (0.8, 0.2) everywhere: the thresholded prediction is class 0 everywhere
    # (full or empty masks: d_P = 0); d_G = edt(fg) + edt(bg) = [2 1 1 2] for both classes;
    # (g - p)^2 = .04 .04 .64 .64 (class 0) and .04 .04 .64 .64 (class 1):
    # (0.04*4 + 0.04*1 + 0.64*1 + 0.64*4) * 2 / (4 pixels * 2 classes) = 0.85
    logits = torch.log(torch.tensor([0.8, 0.2])).view(1, 2, 1, 1).expand(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 1, 1]]])
    assert HausdorffDTLoss(alpha=2.0)(logits, target).item() == pytest.approx(0.85, rel=1e-5)
    # the shared approximation: d_G = distance to the nearest label change = [1 0 0 1]; the class mean
    # of the squared errors is 0.04 on pixels 0,1 and 0.64 on 2,3 -> mean of [.04, 0, 0, .64] = 0.17
    assert HausdorffDTLoss(alpha=2.0, fields="shared")(logits, target).item() == pytest.approx(0.17, rel=1e-5)


def edge_distance(labels: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel having a 4-neighbour with another label (0 without any)."""
    edge = np.zeros(labels.shape, bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    return distance_transform_edt(~edge) if edge.any() else np.zeros(labels.shape)


@pytest.mark.parametrize("alpha", [2.0, 1.0])
def test_hausdorff_shared_approximation_matches_its_formula(alpha):
    logits, target = case(seed=7, c=3, h=8, w=9)
    p, g, valid = np_parts(logits, target, 3)
    t = target.numpy()
    pred = np.where(valid, logits.argmax(1).numpy(), IGNORE)
    total = 0.0
    for n in range(t.shape[0]):
        dist = edge_distance(pred[n]) ** alpha + edge_distance(t[n]) ** alpha
        total += (((p[n] - g[n]) ** 2).mean(0) * dist)[valid[n]].sum()
    expected = total / valid.sum()
    assert HausdorffDTLoss(alpha=alpha, fields="shared")(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_hausdorff_equals_monai_itself():
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = confident_case(11, 4, 10, 13)
    target = torch.where(target == IGNORE, 2, target)  # MONAI has no ignore label
    # MONAI drops channel 0 by default (include_background=False); the paper's mean has every class
    theirs = monai_losses.HausdorffDTLoss(alpha=2.0, softmax=True, to_onehot_y=True, include_background=True)
    expected = theirs(logits, target.unsqueeze(1)).item()
    assert HausdorffDTLoss()(logits, target).item() == pytest.approx(expected, rel=1e-3)


def test_hausdorff_defaults_are_the_configs():
    """One default per parameter: the class, conf/loss/hausdorff.yaml (and the README) agree."""
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "loss" / "hausdorff.yaml")
    defaults = inspect.signature(HausdorffDTLoss).parameters
    for key in cfg.keys() - {"_target_", "ignore_index"}:
        assert defaults[key].default == cfg[key], key
    assert HausdorffDTLoss().dt_stride == 1 and HausdorffDTLoss().fields == "per_class"


# -- compound -------------------------------------------------------------------------------------
def test_ce_dice_is_the_sum_of_its_formulas():
    logits, target = case(seed=8)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE).item()
    dice = reference_region(logits, target, 3, dice_score, False, "present")
    assert (CEDiceLoss(ce_weight=0.7, dice_weight=0.3)(logits, target).item()
            == pytest.approx(0.7 * ce + 0.3 * dice, rel=1e-5))


def test_combo_matches_taghanaki_formula():
    logits, target = case(seed=9)
    p, g, valid = np_parts(logits, target, 3)
    alpha, beta = 0.6, 0.7
    pv, gv = p.transpose(1, 0, 2, 3)[:, valid], g.transpose(1, 0, 2, 3)[:, valid]
    bce = -(beta * gv * np.log(pv) + (1 - beta) * (1 - gv) * np.log(1 - pv)).mean()
    dice = reference_region(logits, target, 3, dice_score, False, "present")
    expected = alpha * bce + (1 - alpha) * dice
    assert ComboLoss(alpha=alpha, beta=beta)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_exp_log_matches_wong_formula():
    logits, target = case(seed=10)
    p, g, valid = np_parts(logits, target, 3)
    tp, ps, gs = (p * g).sum((0, 2, 3)), p.sum((0, 2, 3)), g.sum((0, 2, 3))
    dice = (2 * tp + 1) / (ps + gs + 1)
    l_dice = ((-np.log(dice[gs > 0])) ** 0.3).mean()
    w = np.array([1.0, 2.0, 0.5])
    t = target.numpy()
    labels = np.where(valid, t, 0)
    p_y = np.take_along_axis(p, labels[:, None], 1)[:, 0][valid]
    w_y = w[labels[valid]]
    l_cross = (w_y * (-np.log(p_y)) ** 0.3).sum() / w_y.sum()
    loss = ExpLogLoss(w_dice=0.8, w_cross=0.2, weight=w.tolist())(logits, target)
    assert loss.item() == pytest.approx(0.8 * l_dice + 0.2 * l_cross, rel=1e-5)


def test_sum_loss_forwards_target_fn_and_progress():
    logits, target = case(seed=11)
    dpce, boundary = DistancePenalizedCELoss(), BoundaryLoss(region=DiceLoss())
    total = SumLoss([dpce, boundary], weights=[1.0, 0.5])
    keys = set(total.target_fn(target[0].numpy()))
    assert keys == {"dpce_penalty", "boundary_maps", "boundary_classes"}
    total.set_progress(30, 100)
    assert boundary.progress == pytest.approx(0.3)
    assert total(logits, target).item() == pytest.approx((dpce(logits, target) + 0.5 * boundary(logits, target)).item(),
                                                         rel=1e-6)
