"""A run owns its directory: `<run dir>/.run.lock`, locked (`flock`) for the life of the process.

Two runs started with the same `hydra.run.dir` would otherwise both write there (metrics of one, the
config and checkpoints of the other). The lock is released when the process ends, however it ends
(the kernel drops it); the file stays, holding the pid and host of the last run that held it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

RUN_LOCK_FILE = ".run.lock"
_held: dict[Path, int] = {}  # run dir -> the open lock file (kept open: the lock lasts as long as the process)


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory's lock; `holder` is its "pid N on host"."""

    def __init__(self, run_dir: Path, holder: str) -> None:
        self.holder = holder
        super().__init__(f"{run_dir} is in use by another run ({holder})")


def lock_run_dir(run_dir: str | Path) -> None:
    """Take `<run_dir>/.run.lock` for this process (again: a no-op); raise `RunDirInUse` naming the holder."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / RUN_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirInUse(run_dir, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[run_dir] = fd


def release_run_dir(run_dir: str | Path) -> None:
    """Give the lock back before the process ends (tests; a process running several runs)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)
