"""Properties every loss config must keep (parametrised over the catalog's losses, conf/loss/*.yaml)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite import catalog

NAMES = catalog.config_names("loss")
# minimum 0 at a (confident) perfect prediction, as each class declares (boundary's L_B is negative there)
ZERO_AT_PERFECT = [n for n in NAMES if catalog.loss_zero_at_perfect(n)]
WITH_MAPS = [n for n in NAMES if catalog.loss_needs_maps(n)]  # precomputed ground-truth maps (`target_fn`)
IGNORE = 255


def build(name: str, **overrides):
    node = catalog.group_config("loss", name)
    cfg = OmegaConf.create({"dataset": {"ignore_index": IGNORE}, "loss": node})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"loss.{key}", value, force_add=False)
    return instantiate(cfg.loss)


def set_all_weights(name: str, weights: list[float]):
    """The config with every `weight` key (also nested) set to `weights`."""
    node = catalog.group_config("loss", name)
    cfg = OmegaConf.create({"dataset": {"ignore_index": IGNORE}, "loss": node})

    def visit(n):
        for key in list(n.keys()):
            if key == "weight":
                n[key] = weights
            elif OmegaConf.is_dict(n._get_node(key)):
                visit(n[key])

    visit(cfg.loss)
    return instantiate(cfg.loss)


def sample(n=2, c=4, h=12, w=12, seed=0, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[:, 3:7, 3:8] = 1  # a blob so the maps have structure
    ignore = torch.rand(n, h, w, generator=g) < ignore_frac
    target[ignore] = IGNORE
    return logits, target


def call(loss, logits, target):
    return loss(logits, target)


def test_the_design_losses_are_configs():
    """The loss classes DESIGN.md names are built by configs; whatever else conf/loss/ holds is tested too."""
    design = {"CrossEntropyLoss", "FocalLoss", "DistancePenalizedCELoss", "DiceLoss", "GeneralizedDiceLoss",
              "CEDiceLoss", "IoULoss", "TverskyLoss", "FocalTverskyLoss", "LovaszSoftmaxLoss", "BoundaryLoss",
              "HausdorffDTLoss", "ComboLoss", "ExpLogLoss"}
    assert design <= {catalog.loss_class(n).__name__ for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_ignored_pixels_change_neither_value_nor_gradient(name):
    loss = build(name)
    logits, target = sample()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    a = logits.clone().requires_grad_(True)
    changed = torch.where(ignored, 5.0 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(9)), logits)
    b = changed.clone().requires_grad_(True)
    value_a, value_b = loss(a, target), loss(b, target)
    value_a.backward()
    value_b.backward()
    assert torch.allclose(value_a, value_b, atol=1e-6), (value_a, value_b)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    assert a.grad[ignored].abs().max() == 0


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_and_present(name):
    loss = build(name)
    logits, target = sample(seed=1)
    logits.requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ZERO_AT_PERFECT)
def test_perfect_prediction_gives_about_zero(name):
    loss = build(name)
    _, target = sample(seed=2)
    labels = torch.where(target == IGNORE, torch.zeros_like(target), target)
    logits = 30.0 * torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert abs(loss(logits, target).item()) < 1e-4


def test_boundary_loss_is_lower_for_perfect_than_for_wrong_prediction():
    loss = build("boundary")
    _, target = sample(seed=2, ignore_frac=0.0)
    onehot = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert loss(30 * onehot, target) < loss(30 * onehot.roll(1, dims=1), target)


@pytest.mark.parametrize("name", NAMES)
def test_class_absent_from_batch(name):
    loss = build(name)
    logits, target = sample(seed=3)
    target[target == 2] = 0  # class 2 nowhere
    logits.requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_all_ignored_batch_returns_zero_with_graph(name):
    loss = build(name)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), IGNORE)
    value = loss(logits, target)
    assert value.requires_grad and value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [2, 182])
def test_two_and_many_classes(name, num_classes):
    loss = build(name)
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, num_classes, 10, 10, generator=g, requires_grad=True)
    target = torch.randint(0, num_classes, (2, 10, 10), generator=g)
    target[0, :2] = IGNORE
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_uniform_class_weights_equal_no_weights(name):
    logits, target = sample(seed=5)
    plain = build(name)(logits, target)
    weighted = set_all_weights(name, [2.5] * 4)(logits, target)
    assert torch.allclose(plain, weighted, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_non_uniform_class_weights_change_the_value(name):
    logits, target = sample(seed=5)
    plain = build(name)(logits, target)
    weighted = set_all_weights(name, [1.0, 5.0, 0.2, 1.0])(logits, target)
    assert not torch.allclose(plain, weighted, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_input_gives_float32(name):
    loss = build(name)
    logits, target = sample(seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_extras_are_ignored(name):
    loss = build(name)
    logits, target = sample(seed=7)
    assert torch.allclose(loss(logits, target), loss(logits, target, unrelated=torch.zeros(3)))


@pytest.mark.parametrize("name", WITH_MAPS)
def test_precomputed_targets_give_the_same_value(name):
    loss = build(name)
    logits, target = sample(seed=8)
    items = [loss.target_fn(m) for m in target.numpy()]
    extras = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
    assert all(v.dtype in (torch.float16, torch.int64) for v in extras.values())
    assert torch.allclose(loss(logits, target), loss(logits, target, **extras), atol=1e-6)


def test_wrong_weight_length_and_unresolved_auto_raise():
    logits, target = sample()
    with pytest.raises(ValueError, match="3 entries"):
        build("ce", weight=[1.0, 1.0, 1.0])(logits, target)
    with pytest.raises(Exception, match="resolve_auto_weights"):  # hydra wraps the ValueError
        build("dice", weight="auto")
