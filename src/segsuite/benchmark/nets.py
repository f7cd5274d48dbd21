"""What the sections time: a model built from its shipped config, and the training loss on its output."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite import catalog


def build_model(name: str, num_classes: int, backbone: str | None = None) -> torch.nn.Module:
    """`model=<name>` with `num_classes` classes; `backbone` (e.g. "resnet18") replaces the configured
    backbone of a model on one of its family (`model.backbone.name=...`) and is ignored by the others."""
    cfg = OmegaConf.create({"dataset": {"num_classes": num_classes}, "model": catalog.model_config(name)})
    if backbone and catalog.takes_backbone(name, backbone):
        OmegaConf.update(cfg.model, catalog.backbone_key(name), backbone)
    return instantiate(cfg.model)


def total_loss(criterion: torch.nn.Module, out, target: torch.Tensor, aux_weight: float = 0.4,
               **extras) -> torch.Tensor:
    """Main loss plus `aux_weight` x each auxiliary head's loss (as `SegmentationModule` does)."""
    logits, aux = out if isinstance(out, (tuple, list)) else (out, [])
    loss = criterion(logits, target, **extras)
    for a in aux:
        loss = loss + aux_weight * criterion(a, target, **extras)
    return loss


def model_inputs(batch: int, crop: tuple[int, int], num_classes: int, device: torch.device):
    """A fixed random batch: images [batch, 3, H, W] and labels [batch, H, W]."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *crop, generator=generator).to(device)
    y = torch.randint(0, num_classes, (batch, *crop), generator=generator).to(device)
    return x, y
