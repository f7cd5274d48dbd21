"""Samplers that make data order a pure function of (seed, epoch) and never duplicate samples."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class SeededTrainSampler(Sampler[tuple[int, int]]):
    """Shuffles with a generator seeded by (seed, epoch) and shards across ranks.

    Yields `(index, sample_seed)`: the dataset seeds its augmentation with `sample_seed`, so an
    epoch's images *and* augmentations depend only on (seed, epoch, position). A run resumed from
    a checkpoint therefore sees exactly the data an uninterrupted run would. Every rank gets the
    same number of samples (`drop_last` drops the tail that does not divide evenly).
    """

    def __init__(self, num_samples: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True) -> None:
        if num_samples < num_replicas:
            raise ValueError(f"{num_samples} training samples cannot be split over {num_replicas} processes")
        self.num_samples = num_samples
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.epoch = 0
        self._start = 0

    def start_next_epoch_at(self, position: int) -> None:
        """Begin the next iteration at `position` of this rank's share of the epoch (a resumed epoch
        continues with the samples the interrupted run had not reached); later epochs start at 0."""
        self._start = position

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // self.num_replicas

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=g) if self.shuffle else torch.arange(self.num_samples)
        sample_seeds = torch.randint(0, 2**31 - 1, (self.num_samples,), generator=g)
        usable = len(self) * self.num_replicas
        start, self._start = self._start, 0
        for position in range(self.rank + start * self.num_replicas, usable, self.num_replicas):
            yield int(order[position]), int(sample_seeds[position])


class ShardedEvalSampler(Sampler[int]):
    """Rank r takes indices r, r + W, r + 2W, ...: every sample exactly once, no padding.

    Ranks may get one sample more or less than each other; metrics are summed from confusion
    matrices, so uneven shards are exact (a padded DistributedSampler would count duplicates).
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.num_replicas))
