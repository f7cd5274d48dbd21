"""Instantiating keyed callback and logger configs."""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def _instantiate_keyed(cfg: DictConfig | None, kind: str) -> list:
    objects = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{kind} config must be a mapping of name -> {{_target_: ...}}, got {type(cfg).__name__}")
    for name, node in cfg.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"{kind}.{name} must have a `_target_`; got {node}")
        log.info("instantiating %s <%s>", kind, node._target_)
        objects.append(instantiate(node))
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Instantiate every callback under the `callbacks` node."""
    return _instantiate_keyed(cfg, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Instantiate every logger under the `logger` node."""
    return _instantiate_keyed(cfg, "logger")


def close_loggers() -> None:
    """Finish the W&B run if one is open (so multirun jobs each get their own run)."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
