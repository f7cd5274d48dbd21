"""Files a fault cannot leave half-written: checkpoints and run records go to a temporary file in the
same folder, are flushed to disk and then renamed over the old one.

A crash, a kill or a full disk in the middle of a write therefore leaves the previous good file (or
none), never a cut one; the temporary file is removed. A full disk is reported in one line naming the
file and the space it needs (`DiskFullError`).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or quota) left for a file: its path and the bytes it needs are in the message."""


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def disk_full(path: Path, needed: int) -> DiskFullError:
    """The one-line error for `path` that did not fit: what it needs, what is free."""
    try:
        free = f", {_size(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = ""
    err = DiskFullError(f"no space left on the device for {path}: it needs {_size(needed)}{free}; the previous "
                        f"{path.name} (if any) is unchanged. Free some space and resume")
    err.errno = errno.ENOSPC
    return err


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` through `.<name>.<id>.tmp` in the same folder: write, fsync, rename, fsync the
    folder. On any failure the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    view = memoryview(data).cast("B")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        try:
            _write_all(fd, view)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(err, OSError) and err.errno in _FULL and not isinstance(err, DiskFullError):
            raise disk_full(path, len(view)) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a crash right after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for every checkpoint of a run (`ModelCheckpoint`, the failure
    checkpoint, `trainer.save_checkpoint`): serialised in memory, then `atomic_write_bytes` into the
    checkpoint's own folder. Lightning's default writes a temporary file in the system temp folder and
    moves it, which on another file system is a copy that a full disk or a kill cuts short."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        protocol = get_filesystem(path).protocol
        if storage_options is not None or "file" not in (protocol if isinstance(protocol, tuple) else (protocol,)):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote storage: Lightning's own way
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getbuffer())
