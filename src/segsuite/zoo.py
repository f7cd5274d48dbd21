"""The model zoo: shipped checkpoints and the results they were recorded with.

An entry is `conf/zoo/<name>.yaml` beside its checkpoint `conf/zoo/<name>.ckpt`. It names the
recipe (`experiment`; `stages` when several recipes train it in turn, each from the previous
one's best weights), the seed and the command that trained it, the metrics measured on the named
split, the per-class scores, the machine and time of training, the checkpoint's sha256, and the
bands a reproduction must fall in (`bands.evaluate` for the shipped checkpoint, `bands.retrain`
for a fresh training run). `python -m segsuite.reproduce <name>` checks a copy of the data
against them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from segsuite.utils.paths import config_dir

REQUIRED_KEYS = ("experiment", "dataset", "split", "resolution", "metrics", "per_class", "bands", "command",
                 "seed", "train_time_s", "machine", "commit", "sha256")


def zoo_dir() -> Path:
    """`conf/zoo/`, where entries and their checkpoints live."""
    return config_dir() / "zoo"


def available(directory: Path | None = None) -> list[str]:
    """Names of the zoo entries (sorted)."""
    return sorted(p.stem for p in (directory or zoo_dir()).glob("*.yaml"))


@dataclass(frozen=True)
class ZooEntry:
    """One zoo entry: its name, its record and where its checkpoint lies."""

    name: str
    record: DictConfig
    checkpoint: Path

    @property
    def experiment(self) -> str:
        return str(self.record.experiment)

    @property
    def stages(self) -> list[str]:
        """The recipes that train it, in order (each from the previous one's best weights); one for most."""
        return [str(s) for s in self.record.get("stages") or [self.record.experiment]]

    def band(self, kind: str) -> dict[str, tuple[float, float]]:
        """`{metric: (low, high)}` for `kind` = evaluate | retrain."""
        return {k: (float(v[0]), float(v[1])) for k, v in self.record.bands[kind].items()}


def load_entry(name: str, directory: Path | None = None) -> ZooEntry:
    """Read `<directory>/<name>.yaml`, checking its keys; an unknown name lists the known ones."""
    directory = directory or zoo_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no zoo entry {name!r} in {directory}; "
                                f"known entries: {', '.join(available(directory)) or 'none'}")
    record = OmegaConf.load(path)
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: zoo entry lacks {', '.join(missing)}")
    return ZooEntry(name, record, directory / str(record.get("checkpoint", f"{name}.ckpt")))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(entry: ZooEntry) -> None:
    """Fail, naming the file and both hashes, when the checkpoint is missing or differs from the entry."""
    if not entry.checkpoint.is_file():
        raise FileNotFoundError(f"zoo entry {entry.name!r}: checkpoint {entry.checkpoint} is missing; reinstall "
                                f"segsuite or restore the file from the repository")
    actual = sha256_of(entry.checkpoint)
    if actual != entry.record.sha256:
        raise ValueError(f"zoo entry {entry.name!r}: {entry.checkpoint} has sha256 {actual}, the entry records "
                         f"{entry.record.sha256}; the file was changed or damaged: restore it from the repository")


def outside_band(metrics: dict[str, float], band: dict[str, tuple[float, float]]) -> list[str]:
    """One message per banded metric that is missing from `metrics` or outside its [low, high]."""
    failures = []
    for key, (low, high) in band.items():
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key}: not measured (expected in [{low:.4f}, {high:.4f}])")
        elif not low <= value <= high:
            failures.append(f"{key} = {value:.4f} is outside the recorded band [{low:.4f}, {high:.4f}]")
    return failures


def slim_checkpoint(source: Path, target: Path, data_dir: str | None = None,
                    rename: dict[str, str] | None = None) -> None:
    """Write `source` without optimizer, scheduler and callback state (all that evaluation, prediction and
    export read is kept); `data_dir`, when given, replaces that prefix of the stored paths by `data`, and
    each `rename` prefix by its value (e.g. the training checkout by the repository's relative path),
    so the checkpoint names no path of the machine it was trained on."""
    ckpt: dict[str, Any] = torch.load(source, map_location="cpu", weights_only=True)
    keep = {k: ckpt[k] for k in ("state_dict", "segsuite", "epoch", "global_step", "pytorch-lightning_version")
            if k in ckpt}
    prefixes = dict(rename or {})
    if data_dir:
        prefixes[str(data_dir).rstrip("/")] = "data"
    if prefixes:
        _relocate(keep["segsuite"]["config"], prefixes)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(keep, target)


def _relocate(node: Any, prefixes: dict[str, str]) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, str):
            for old, new in prefixes.items():
                if value == old or value.startswith(old.rstrip("/") + "/"):
                    node[key] = new + value[len(old):]
                    break
        else:
            _relocate(value, prefixes)
