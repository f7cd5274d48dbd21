"""Checking a split's files before training: every file opens, sizes agree, labels map to train ids.

`data.verify` chooses how much is checked before `fit` starts:

- `full`: each image and mask is decoded and checked as training would check it (sizes agree,
  every label value maps to a train id or the ignore label);
- `quick`: each file exists, is complete (PNG IEND, JPEG end-of-image marker) and its header
  opens; image and mask headers give the same size; label values are not read;
- `off`: nothing (an empty split is still an error).

Files that passed are remembered in `<data_dir>/.segsuite_cache/verified/` by path, inode, size,
modification time and inode change time (ctime), so a second run only stats the files. The ctime is
what `touch -d`/`os.utime` cannot set back: a file rewritten with the same size and its mtime
restored is checked again. What the cache cannot see: a change that leaves all of these as they
were, which takes resetting the system clock, a file system that does not keep a ctime of its own
(some network and FUSE mounts report the mtime there), or a change within one tick of the
file system's clock after the check passed it. `data.verify=full` with the cache deleted
(`rm -r <data_dir>/.segsuite_cache/verified`) checks every file again.

A file that fails stops the run naming it and the fix, or, with `data.skip_bad=true`, is left out
of the split and named in the run's records (`skipped_bad_samples`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from segsuite.data import io as dataio
from segsuite.data.datasets.base import DatasetError, SegDataset

log = logging.getLogger(__name__)

MODES = ("full", "quick", "off")
_STRENGTH = {"quick": 1, "full": 2}
_SHOWN = 5  # bad files listed in the error message


@dataclass
class VerifyReport:
    """What checking one split found."""

    split: str
    mode: str
    total: int
    checked: int = 0          # files decoded or opened in this run
    cached: int = 0           # passed in an earlier run, unchanged since
    bad: list[str] = field(default_factory=list)   # one message per bad sample
    bad_indices: list[int] = field(default_factory=list)
    seconds: float = 0.0


def split_is_empty_error(split: str, where: str) -> DatasetError:
    """The error for a split without samples, naming where it was read from."""
    return DatasetError(
        f"the {split} split is empty: no samples were found in {where}. Check the dataset root and split "
        f"(dataset.root=..., or SEGSUITE_DATA_DIR), or that the download was unpacked completely"
        + ("; to train without validation say so with trainer.limit_val_batches=0" if split == "val" else "")
    )


def _file_key(path: Path) -> str:
    """What identifies this version of the file: path, inode, size, mtime and ctime (see the module docstring)."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"


def _sample_key(sample: dataio.Sample) -> str | None:
    try:
        return f"{_file_key(Path(sample.image))}#{_file_key(Path(sample.mask))}"
    except (OSError, RuntimeError):  # missing, or a link loop (resolve: RuntimeError): never cached, the check names it
        return None


def _cache_file(cache_dir: Path, dataset: SegDataset) -> Path:
    """One file per dataset type and label contract (class list and ignore label)."""
    identity = json.dumps([type(dataset).__qualname__, list(dataset.classes), int(dataset.ignore_index)])
    return cache_dir / "verified" / f"{type(dataset).__name__}-{hashlib.sha1(identity.encode()).hexdigest()[:12]}.json"


def _load_cache(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, entries: dict[str, str]) -> None:
    """Write atomically (several processes of a DDP run may write at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, path)


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding it; None for non-image files (.mat)."""
    if path.suffix.lower() == ".mat":
        return None
    data = dataio.read_bytes(path)
    dataio._check_complete(data, path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except OSError as err:
        raise DatasetError(f"{path}: not a readable image ({err}); re-download or re-extract it.") from err


def check_image_file(path: Path) -> None:
    """`data.verify=quick`'s check of one image: the file is complete and its header opens."""
    _header_size(Path(path))


def _check_quick(sample: dataio.Sample) -> None:
    image, mask = _header_size(Path(sample.image)), _header_size(Path(sample.mask))
    if image is not None and mask is not None and image != mask:
        raise DatasetError(f"{sample.mask}: mask is {mask[0]}x{mask[1]} (width x height) but its image "
                           f"{sample.image} is {image[0]}x{image[1]}; they must match.")


def _check(dataset: SegDataset, index: int, mode: str) -> str | None:
    """None if sample `index` passes, else the message naming the file and the fix."""
    try:
        if mode == "full":
            dataset.load_valid(index)
        else:
            _check_quick(dataset.samples[index])
    except DatasetError as err:
        sample = dataset.samples[index]
        message = str(err)
        named = str(sample.image) in message or str(sample.mask) in message
        return message if named else f"{sample.mask} (image {sample.image}): {message}"
    return None


def verify_split(dataset: SegDataset, split: str, mode: str, cache_dir: Path | None,
                 workers: int = 1, progress: bool | None = None) -> VerifyReport:
    """Check every sample of `dataset` (see the module docstring); never raises for bad files.

    Datasets without files on disk (the procedural set) have nothing to check.
    """
    if mode not in MODES:
        raise ValueError(f"data.verify={mode!r}: expected one of {', '.join(MODES)}")
    report = VerifyReport(split, mode, len(dataset))
    samples: Sequence[Any] | None = getattr(dataset, "samples", None)
    if mode == "off" or samples is None:
        return report
    start = time.perf_counter()
    cache_path = _cache_file(cache_dir, dataset) if cache_dir is not None else None
    cache = _load_cache(cache_path) if cache_path is not None else {}
    keys = [_sample_key(s) for s in samples]
    todo = [i for i, key in enumerate(keys) if key is None or _STRENGTH.get(cache.get(key, ""), 0) < _STRENGTH[mode]]
    report.cached = len(samples) - len(todo)
    show = (sys.stderr.isatty() if progress is None else progress) and bool(todo)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # decoders release the GIL
        results = pool.map(lambda i: (i, _check(dataset, i, mode)), todo)
        for i, problem in tqdm(results, total=len(todo), desc=f"checking {split} files ({mode})",
                               disable=not show, leave=False):
            report.checked += 1
            if problem is None:
                if keys[i] is not None:
                    cache[keys[i]] = mode
            else:
                report.bad.append(problem)
                report.bad_indices.append(i)
    if cache_path is not None and report.checked:
        try:
            _save_cache(cache_path, cache)
        except OSError as err:  # a read-only data directory: check again next time
            log.warning("could not write the verification cache %s (%s)", cache_path, err)
    report.seconds = time.perf_counter() - start
    return report


def bad_files_error(report: VerifyReport, task: str = "training") -> DatasetError:
    """The error that stops a run (`task`: training, evaluating, predicting) on bad files: each named
    (the first few), and the ways out."""
    listed = "\n  ".join(report.bad[:_SHOWN])
    more = f"\n  ... and {len(report.bad) - _SHOWN} more" if len(report.bad) > _SHOWN else ""
    return DatasetError(
        f"{len(report.bad)} of {report.total} {report.split} samples failed the check before {task} "
        f"(data.verify={report.mode}):\n  {listed}{more}\nRepair or remove these files, or set data.skip_bad=true "
        f"to leave them out of the split (data.verify=off skips this check)."
    )
