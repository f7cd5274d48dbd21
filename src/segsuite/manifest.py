"""The run manifest: what every segsuite checkpoint carries besides its weights.

Evaluate, predict, export and the zoo need nothing but the checkpoint: the resolved training
config, the class names, palette and normalisation, and the facts of the run that wrote it. It
is stored as plain containers under `checkpoint["segsuite"]`, so `torch.load(weights_only=True)`
reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

MANIFEST_KEY = "segsuite"  # the checkpoint entry that holds the manifest


@dataclass(frozen=True)
class RunManifest:
    """The run's description stored in its checkpoints.

    Args:
        config: the resolved training config (plain containers).
        class_names: class names in label order.
        palette: an RGB colour per class.
        mean, std: the input normalisation in 0-1 units, `x = (rgb / 255 - mean) / std`.
        num_classes: number of classes.
        ignore_index: the label that counts nowhere.
        run_facts: facts of the training run (batch sizes, world size, precision, seed, ...).
    """

    config: dict[str, Any]
    class_names: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    num_classes: int
    ignore_index: int
    run_facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: DictConfig, class_names: Sequence[str], palette: Sequence[Sequence[int]],
                    run_facts: dict[str, Any] | None = None) -> RunManifest:
        """The manifest of a run of `cfg` on a dataset with these classes and colours."""
        return cls(
            config=OmegaConf.to_container(cfg, resolve=True),
            class_names=[str(name) for name in class_names],
            palette=[[int(c) for c in colour] for colour in palette],
            mean=[float(v) for v in cfg.dataset.mean],
            std=[float(v) for v in cfg.dataset.std],
            num_classes=int(cfg.dataset.num_classes),
            ignore_index=int(cfg.dataset.ignore_index),
            run_facts=dict(run_facts or {}),
        )

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunManifest:
        """The manifest stored in a loaded checkpoint (keys it does not know are ignored); a model
        config of an older layout is read in today's (`upgrade_model_config`)."""
        stored = dict(ckpt[MANIFEST_KEY])
        if isinstance(stored.get("config"), dict) and isinstance(stored["config"].get("model"), dict):
            stored["config"] = {**stored["config"], "model": upgrade_model_config(stored["config"]["model"])}
        return cls(**{name: stored[name] for name in cls.__dataclass_fields__ if name in stored})

    def to_dict(self) -> dict[str, Any]:
        """Plain containers, as stored in the checkpoint."""
        return asdict(self)

    @property
    def model_target(self) -> str:
        """The architecture's class path, e.g. `segsuite.models.enet.ENet`."""
        return str(self.config["model"].get("_target_"))

    def describe(self) -> str:
        """`'segsuite.models.unet.UNet with 6 classes'`."""
        return f"{self.model_target} with {self.num_classes} classes"


# Keys a head took itself before its encoder became a `backbone:` node, under their node names.
_RENAMED_INTO_BACKBONE = {"dropout": "fc_dropout"}  # FCN's fc6/fc7 dropout


def upgrade_model_config(model: dict[str, Any]) -> dict[str, Any]:
    """A stored model config in today's layout.

    Checkpoints written before backbones became a `backbone:` node hold the encoder's settings at the
    top level (`backbone: resnet50`, `pretrained`, `output_stride`, `frozen_stages`, ...). Those move
    into the node of today's config for the same architecture (its other node keys keep today's
    defaults, which were the fixed values then). Configs already in today's layout, and
    architectures without a backbone node, are returned unchanged. State-dict keys never changed.
    """
    if not model.get("_target_") or isinstance(model.get("backbone"), dict):
        return model
    from segsuite.catalog import config_for_target  # the catalog imports the model classes lazily

    current = config_for_target("model", str(model.get("_target_")))
    if current is None or not isinstance(current.get("backbone"), dict):
        return model
    node = dict(current["backbone"])
    upgraded = {k: v for k, v in model.items() if k != "backbone"}
    if isinstance(model.get("backbone"), str):
        node["name"] = model["backbone"]
    for key in list(upgraded):
        target = _RENAMED_INTO_BACKBONE.get(key, key) if key not in current else key
        if key not in current and target in node:
            node[target] = upgraded.pop(key)
    return {**upgraded, "backbone": node}
