"""Optimizer parameter groups and per-iteration learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0
) -> list[dict]:
    """Split parameters into (backbone | head) x (decay | no decay) groups.

    Norm-layer parameters and all biases get no weight decay. Parameters of `model.backbone`
    (if the model has one) get `lr * backbone_lr_mult`. Frozen parameters are left out.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                no_decay.add(id(p))
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    groups: dict[tuple[bool, bool], dict] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = (id(p) in backbone_ids, id(p) in no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * (backbone_lr_mult if key[0] else 1.0),
                "weight_decay": 0.0 if key[1] else weight_decay,
                "name": f"{'backbone' if key[0] else 'head'}{'_no_decay' if key[1] else ''}",
            }
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    model: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """Instantiate `optimizer_factory` (a partial, e.g. torch.optim.SGD) over `param_groups`."""
    return optimizer_factory(param_groups(model, lr, weight_decay, backbone_lr_mult), lr=lr, weight_decay=weight_decay)


def _warmup_factor(step: int, warmup_steps: int, warmup_ratio: float) -> float:
    return warmup_ratio + (1.0 - warmup_ratio) * step / warmup_steps


def poly_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    power: float = 0.9,
    min_lr_ratio: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 1e-6,
) -> LambdaLR:
    """Polynomial decay `(1 - t/T)^power` per iteration, after an optional linear warmup."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup_factor(step, warmup_steps, warmup_ratio)
        t = min(step, total_steps) / max(total_steps, 1)
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - t) ** power

    return LambdaLR(optimizer, factor)


def cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    min_lr_ratio: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 1e-6,
) -> LambdaLR:
    """Cosine decay per iteration to `min_lr_ratio`, after an optional linear warmup."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup_factor(step, warmup_steps, warmup_ratio)
        t = min(step - warmup_steps, total_steps - warmup_steps) / max(total_steps - warmup_steps, 1)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return LambdaLR(optimizer, factor)


def onecycle_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's OneCycleLR with each group's current learning rate as its peak."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps,
        pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor,
    )


def total_params(params: Iterable[nn.Parameter]) -> int:
    """Number of elements in `params`."""
    return sum(p.numel() for p in params)
