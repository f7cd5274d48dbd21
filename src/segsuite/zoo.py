"""The model zoo: shipped checkpoints and the results they were recorded with.

An entry is `conf/zoo/<name>.yaml` beside its checkpoint `conf/zoo/<name>.ckpt`. It names the
recipe (`experiment`; `stages` when several recipes train it in turn, each from the previous
one's best weights), the seed and the command that trained it, the metrics measured on the named
split, the per-class scores, the machine and time of training, the checkpoint's sha256 (checked on
every load: `checkpoint_file`; an entry may add the `url` it is downloaded from when absent), the data
the metrics were measured on (`data`: split, image count and fingerprint, see `data_fingerprint`)
and the bands a reproduction must fall in (`bands.evaluate` for the shipped checkpoint,
`bands.retrain` for a fresh training run). `python -m segsuite.reproduce <name>` checks a copy of
the data against them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from segsuite.utils.download import sha256_of
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


def verify_checkpoint(entry: ZooEntry, path: Path | None = None) -> None:
    """Fail, naming the file and both hashes, when the checkpoint (`path`, default the one beside the entry) is
    missing or differs from the entry."""
    path = path or entry.checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"zoo entry {entry.name!r}: checkpoint {path} is missing; reinstall "
                                f"segsuite or restore the file from the repository")
    actual = sha256_of(path)
    if actual != entry.record.sha256:
        raise ValueError(f"zoo entry {entry.name!r}: {path} has sha256 {actual}, the entry records "
                         f"{entry.record.sha256}; the file was changed or damaged: restore it from the repository")


def checkpoint_file(entry: ZooEntry) -> Path:
    """The entry's checkpoint, its sha256 verified: the file beside the entry, or, where that is absent and the
    entry has a `url`, its copy in torch.hub's cache (downloaded once; offline, the error names the URL and the
    path to put the file in)."""
    if not entry.checkpoint.is_file() and entry.record.get("url"):
        from segsuite.utils.download import cached_download

        return cached_download(str(entry.record.url), f"zoo entry {entry.name!r}", sha256=str(entry.record.sha256))
    verify_checkpoint(entry)
    return entry.checkpoint


def entry_for_file(path: Path, directory: Path | None = None) -> ZooEntry | None:
    """The zoo entry whose checkpoint `path` is (a file in the zoo folder an entry names), or None."""
    directory = (directory or zoo_dir()).resolve()
    path = Path(path).resolve()
    if path.parent != directory:
        return None
    for name in available(directory):
        entry = load_entry(name, directory)
        if entry.checkpoint.resolve() == path:
            return entry
    return None


def outside_band(metrics: dict[str, float], band: dict[str, tuple[float, float]]) -> list[str]:
    """One message per banded metric that is missing from `metrics` or outside its [low, high]; the value
    has one digit more than the band, so a value just outside never rounds onto the band's edge."""
    failures = []
    for key, (low, high) in band.items():
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key}: not measured (expected in [{low:.4f}, {high:.4f}])")
        elif not low <= value <= high:
            failures.append(f"{key} = {shown_value(value, low, high)} is outside the recorded band "
                            f"[{low:.4f}, {high:.4f}]")
    return failures


def shown_value(value: float, low: float, high: float) -> str:
    """`value` with at least 5 decimals, more where fewer would round it onto the band [low, high]."""
    for digits in range(5, 10):
        text = f"{value:.{digits}f}"
        if (low <= float(text) <= high) == (low <= value <= high):
            return text
    return repr(value)


# -- the data an entry was measured on ---------------------------------------------------------------
def label_lines(samples: Iterable[tuple[str, Path]]) -> list[str]:
    """`"<name> <sha256 of its label file>"` per (image name, label path), sorted by name: what an entry's
    data fingerprint is computed over."""
    return sorted(f"{name} {sha256_of(Path(label))}" for name, label in samples)


def data_fingerprint(lines: Iterable[str]) -> str:
    """sha256 over the `label_lines` (one per line, newline-terminated): the same images with the same labels
    give the same fingerprint, wherever the data lie."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


def data_record(split: str, lines: list[str]) -> dict[str, Any]:
    """The `data` block of an entry: split, image count and fingerprint."""
    return {"split": split, "images": len(lines), "fingerprint": data_fingerprint(lines)}


def data_differences(entry: ZooEntry, lines: list[str], directory: Path | None = None) -> str | None:
    """None when `lines` (`label_lines` of your copy of the split) are the data the entry was measured on;
    else what differs: images missing or extra and labels changed, named where the entry's per-label list
    (`data.labels`, a file beside the entry) is at hand, else counted. Raises nothing for an entry without a
    `data` block (the caller notes that it cannot check)."""
    recorded = entry.record.get("data")
    if recorded is None or data_fingerprint(lines) == recorded.fingerprint:
        return None
    listing = (directory or zoo_dir()) / str(recorded.labels) if recorded.get("labels") else None
    if listing is not None and listing.is_file():
        theirs = dict(line.rsplit(" ", 1) for line in listing.read_text().splitlines() if line)
        ours = dict(line.rsplit(" ", 1) for line in lines)
        parts = [f"{len(group)} {what} ({_names(group)})" for group, what in (
            (sorted(set(theirs) - set(ours)), "image(s) missing"), (sorted(set(ours) - set(theirs)), "extra image(s)"),
            (sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n]), "label(s) changed")) if group]
    else:
        count, expected = len(lines), int(recorded.images)
        parts = [f"{expected - count} image(s) missing" if count < expected else
                 f"{count - expected} extra image(s)" if count > expected else "labels changed (or other images)"]
    return (f"your data differ from the entry's: {', '.join(parts) or 'the fingerprint differs'}; the entry was "
            f"measured on {int(recorded.images)} {recorded.split} image(s) (fingerprint {recorded.fingerprint[:12]}), "
            f"yours are {len(lines)} (fingerprint {data_fingerprint(lines)[:12]})")


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


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
