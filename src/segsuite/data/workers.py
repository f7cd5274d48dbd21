"""How many dataloader workers a process runs (`data.num_workers=auto`)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def auto_num_workers(processes_per_node: int, cores: int | None = None, most: int = 8) -> int:
    """Dataloader workers per process for `data.num_workers=auto`.

    Each of the node's training processes gets an equal share of the usable cores; one core of
    the share stays with the process itself (the training loop, the collation of its batches),
    the rest run workers, at least 1 and at most `most` (more rarely pays and costs memory).
    """
    cores = usable_cores() if cores is None else cores
    share = cores // max(int(processes_per_node), 1)
    return max(1, min(most, share - 1))
