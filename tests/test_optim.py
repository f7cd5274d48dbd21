"""Parameter groups and learning-rate schedules against their formulas."""

import math

import pytest
import torch
from torch import nn

from segsuite.optim import cosine_schedule, param_groups, poly_schedule


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)


def test_param_groups_split_decay_and_backbone_lr():
    model = Tiny()
    groups = {g["name"]: g for g in param_groups(model, lr=0.1, weight_decay=0.01, backbone_lr_mult=0.1)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"]["params"] == [model.backbone[0].weight]
    assert {id(p) for p in groups["backbone_no_decay"]["params"]} == {
        id(model.backbone[0].bias), id(model.backbone[1].weight), id(model.backbone[1].bias)}
    assert groups["backbone"]["lr"] == pytest.approx(0.01)
    assert groups["head"]["lr"] == pytest.approx(0.1)
    assert groups["head_no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["weight_decay"] == 0.01


def test_frozen_parameters_are_left_out():
    model = Tiny()
    model.backbone.requires_grad_(False)
    names = {g["name"] for g in param_groups(model, lr=0.1, weight_decay=0.0)}
    assert names == {"head", "head_no_decay"}


def _lrs(make, steps):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_poly_schedule_formula():
    lrs = _lrs(lambda o: poly_schedule(o, total_steps=10, power=0.9), 10)
    assert lrs == pytest.approx([(1 - i / 10) ** 0.9 for i in range(10)])


def test_poly_warmup_is_linear_then_decays():
    lrs = _lrs(lambda o: poly_schedule(o, total_steps=10, power=1.0, warmup_steps=4, warmup_ratio=0.0), 10)
    assert lrs[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert lrs[4:] == pytest.approx([1 - i / 10 for i in range(4, 10)])


def test_cosine_schedule_formula():
    lrs = _lrs(lambda o: cosine_schedule(o, total_steps=8, min_lr_ratio=0.1), 8)
    assert lrs == pytest.approx([0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)])
