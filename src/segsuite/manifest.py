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
        """The manifest stored in a loaded checkpoint (keys it does not know are ignored)."""
        stored = ckpt[MANIFEST_KEY]
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
