"""SegDataModule: the splits of the dataset config, checked before training, and their loaders.

Its parts live beside it: batching and bad-sample bookkeeping (`collate`), the augmentation pipelines
and the normalisation on the device (`pipelines`), worker counts (`workers`), the mid-epoch resume
(`resume`), the file check (`verify`) and the samplers (`samplers`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from segsuite.data import resume
from segsuite.data.collate import add_skipped, collate, gather_skipped
from segsuite.data.datasets.base import DatasetError, SegDataset
from segsuite.data.pipelines import SplitPipelines
from segsuite.data.samplers import SeededTrainSampler, ShardedEvalSampler
from segsuite.data.transforms import DeviceNormalize
from segsuite.data.verify import VerifyReport, bad_files_error, split_is_empty_error, verify_split
from segsuite.data.workers import auto_num_workers, usable_cores

log = logging.getLogger(__name__)


class SegDataModule(pl.LightningDataModule):
    """A LightningDataModule generic over dataset configs.

    Args:
        dataset: the `dataset` config node (one `_target_` per split: train, val, test).
        augmentation: the `augmentation` config node (`train` and `val` albumentations pipelines).
        batch_size: *global* batch size; each of the W processes loads batch_size / W.
        val_batch_size: global batch size for validation/test (full images; default batch_size).
        num_workers: dataloader worker processes per device, or "auto": the CPU cores this process
            may use, divided among the trainer's processes on this node, less one for the
            process itself, between 1 and 8 (`auto_num_workers`).
        pin_memory: pin host memory for faster copies to a GPU; None: on when CUDA is available.
        persistent_workers: keep workers alive between epochs (ignored without workers).
        seed: seed of the training order and augmentations.
        skip_bad: passed to every dataset: leave bad samples out with a warning instead of failing:
            files that fail the check before training (`verify`) leave their split, files found bad
            in use leave their batch (`collate`); every one is named in `skipped`.
        verify: how `check_splits` checks each split's files before training: full | quick | off
            (`segsuite.data.verify`).
        cache_dir: where passed checks are remembered (by path, inode, size, mtime and ctime); None: nowhere.
        normalize_on_device: move the pipelines' final `albumentations.Normalize` onto the device
            (`SplitPipelines`): workers ship uint8 images and masks, and `on_after_batch_transfer`
            applies the same normalisation to the batch.
        target_fn: extra per-pixel targets the loss asks for (its `target_fn`, e.g. distance
            maps), computed from each transformed mask in the workers; None: none (`set_target_fn`
            gives it later, to the splits built before the loss).
    """

    def __init__(
        self,
        dataset: DictConfig,
        augmentation: DictConfig,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = 2,
        seed: int = 0,
        skip_bad: bool = False,
        normalize_on_device: bool = True,
        verify: str = "full",
        cache_dir: str | None = None,
        target_fn: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    ) -> None:
        super().__init__()
        self.dataset_cfg = dataset
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        if num_workers != "auto" and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                      or num_workers < 0):
            raise ValueError(f"data.num_workers={num_workers!r}: expected a count >= 0 or 'auto'")
        self.num_workers_setting = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers_setting = persistent_workers
        self.prefetch_factor_setting = prefetch_factor
        self._logged_workers: int | None = None
        self.seed = seed
        self.skip_bad = skip_bad
        self.pipelines = SplitPipelines(augmentation, on_device=normalize_on_device)
        self.verify = verify
        self.cache_dir = cache_dir
        # split -> messages naming every sample left out (skip_bad): unpaired files and files that failed
        # the check, then files found bad while in use (reported by the workers through their batches)
        self.skipped: dict[str, list[str]] = {}
        self._found_in_use: dict[str, set[str]] = {}  # split -> bad samples met in batches
        self.target_fn = target_fn
        self.datasets: dict[str, SegDataset] = {}

    # -- datasets ---------------------------------------------------------------------------------
    def build_dataset(self, split: str, transform: Callable | None = None, uint8_output: bool = False) -> SegDataset:
        """Instantiate `dataset.<split>` with `transform` (None: raw uint8 image, int64 mask)."""
        if split not in self.dataset_cfg or self.dataset_cfg[split] is None:
            raise KeyError(
                f"dataset '{self.dataset_cfg.get('name')}' has no '{split}' split in its config "
                f"(dataset.{split}); choose one of {[s for s in ('train', 'val', 'test') if self.dataset_cfg.get(s)]}"
            )
        try:
            return instantiate(self.dataset_cfg[split], transform=transform, skip_bad=self.skip_bad,
                               target_fn=self.target_fn, uint8_output=uint8_output)
        except InstantiationException as err:  # show the dataset's own message, not Hydra's wrapper
            if isinstance(err.__cause__, (DatasetError, FileNotFoundError)):
                raise err.__cause__ from None
            raise

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "fit", ("val",))
        for split in splits:
            if split not in self.datasets:
                pipeline, moved = self.pipelines.build("train" if split == "train" else "val")
                self.datasets[split] = self.build_dataset(split, pipeline, uint8_output=moved)
                log.info("%s split: %d images", split, len(self.datasets[split]))

    def where(self, split: str) -> str:
        """Where `split` is read from, as its config says (for messages)."""
        node = self.dataset_cfg.get(split) or {}
        found = {k: node[k] for k in node if k != "_target_" and any(t in k for t in ("root", "split", "list", "dir"))}
        described = ", ".join(f"{k}={v}" for k, v in found.items())
        return f"dataset.{split} ({node.get('_target_', '?')}{': ' + described if described else ''})"

    def check_splits(self, splits: list[str], workers: int | None = None,
                     task: str = "training") -> dict[str, VerifyReport]:
        """Build `splits` and check their files before training (`verify`); raise on an empty split
        or a bad file (with `skip_bad`, leave bad files out instead and name them in `skipped`, with
        the files left out when the split was listed)."""
        stages = {"train": "fit", "val": "fit", "test": "test"}
        reports = {}
        for split in splits:
            self.setup(stages[split])
            dataset = self.datasets[split]
            if len(dataset) == 0:
                raise split_is_empty_error(split, self.where(split))
            report = verify_split(dataset, split, self.verify, Path(self.cache_dir) if self.cache_dir else None,
                                  workers=workers or usable_cores())
            if report.bad and not self.skip_bad:
                raise bad_files_error(report, task)
            add_skipped(self.skipped, ((split, m) for m in [*getattr(dataset, "left_out", ()), *report.bad]))
            if report.bad:
                bad = set(report.bad_indices)
                dataset.samples = [s for i, s in enumerate(dataset.samples) if i not in bad]
                log.warning("%s split: left out %d bad sample(s) of %d (data.skip_bad=true):\n  %s", split,
                            len(bad), report.total, "\n  ".join(report.bad))
                if len(dataset) == 0:
                    raise split_is_empty_error(split, self.where(split) + " after leaving out its bad files")
            if report.checked or report.cached:
                log.info("%s split: %d samples checked (data.verify=%s): %d decoded in %.1f s, %d unchanged since "
                         "an earlier check, %d bad", split, report.total, report.mode, report.checked,
                         report.seconds, report.cached, len(report.bad))
            reports[split] = report
        return reports

    def skipped_everywhere(self) -> dict[str, list[str]]:
        """`skipped`, merged over the processes of a distributed run: a collective call there (`gather_skipped`)."""
        return gather_skipped(self.skipped)

    def set_target_fn(self, target_fn: Callable[[np.ndarray], dict[str, np.ndarray]] | None) -> None:
        """The loss's extra per-pixel targets (`target_fn`), for the splits built from now on and those built
        already (the loss is built after the train split is checked, when its class weights come from it)."""
        self.target_fn = target_fn
        for dataset in self.datasets.values():
            dataset.target_fn = target_fn

    @property
    def device_normalize(self) -> DeviceNormalize | None:
        """The normalisation moved out of the pipelines onto the device (None: the workers normalise)."""
        return self.pipelines.device_normalize

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the bad samples `collate` dropped from the batch (`skipped`), in the main process; raise
        once every sample of a split this process reads has turned out bad."""
        if isinstance(batch, dict) and "skipped" in batch:
            batch = dict(batch)
            entries = batch.pop("skipped")
            add_skipped(self.skipped, entries)
            for split, message in entries:
                found = self._found_in_use.setdefault(split, set())
                found.add(message)
                dataset = self.datasets.get(split)
                if dataset is not None and len(found) >= len(dataset):
                    raise DatasetError(f"every sample of the {split} split ({len(dataset)}) is bad; one: "
                                       f"{min(found)}. Repair the files (data.verify=full names them all)")
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise uint8 images on the device (see `normalize_on_device`); masks become int64."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
            batch = self.to_model_input(batch)
        return batch

    def to_model_input(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as the model and loss take it: float32 normalised images, int64 masks."""
        return self.pipelines.to_model_input(batch)

    @property
    def class_names(self) -> list[str]:
        """Class names of the dataset (from its val split)."""
        return list(self._any_dataset().classes)

    @property
    def palette(self) -> np.ndarray:
        return np.asarray(self._any_dataset().palette, dtype=np.uint8)

    def _any_dataset(self) -> SegDataset:
        if not self.datasets:
            self.setup("validate")
        return next(iter(self.datasets.values()))

    # -- loaders ----------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def per_device_batch(self, global_batch: int, world: int | None = None) -> int:
        """global_batch / world size (the trainer's, unless given); raises if it does not divide."""
        world = self._world()[0] if world is None else world
        if global_batch % world:
            raise ValueError(
                f"data.batch_size={global_batch} is the global batch and must divide by the "
                f"{world} processes; set data.batch_size to a multiple of {world}."
            )
        return global_batch // world

    def check_train_batches(self, world_size: int) -> int:
        """Training batches per epoch and process (the train split built); raise before training when
        the batch does not divide over the processes or is larger than each process's share of the
        split (its loader drops the incomplete last batch, so the epoch would train nothing)."""
        per_device = self.per_device_batch(self.batch_size, world_size)
        samples = len(self.datasets["train"])
        share = samples // world_size  # SeededTrainSampler: equal shares, the remainder left out
        if share < per_device:
            over = f" over {world_size} processes ({share} each)" if world_size > 1 else ""
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the train split: {samples} samples{over}, "
                f"batches of {per_device} per process (data.batch_size={self.batch_size} / world size "
                f"{world_size}) and drop_last=true (the incomplete last batch is dropped), so no step would train; "
                f"set data.batch_size<={share * world_size} or add training samples")
        return share // per_device

    @property
    def num_workers(self) -> int:
        """Workers per dataloader: `num_workers`, or with "auto" sized to this node's cores and the
        trainer's processes on it."""
        if self.num_workers_setting != "auto":
            return self.num_workers_setting
        trainer = self.trainer
        processes = getattr(trainer, "num_devices", 1) if trainer is not None else 1
        workers = auto_num_workers(processes)
        if workers != self._logged_workers:
            self._logged_workers = workers
            log.info("data.num_workers=auto: %d per process (%d usable cores, %d training processes on this node)",
                     workers, usable_cores(), processes)
        return workers

    def _loader(self, split: str, batch_size: int, sampler) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.datasets[split], batch_size=batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers_setting and workers > 0,
            prefetch_factor=self.prefetch_factor_setting if workers > 0 else None,
            collate_fn=functools.partial(collate, ignore_index=int(self.dataset_cfg.get("ignore_index", 255)),
                                         split=split),
            drop_last=split == "train",
        )

    def raw_dataset(self, split: str) -> SegDataset:
        """`split` without transforms or extra targets (uint8 images, int64 masks), holding the samples
        `check_splits` kept: what class weights are counted on."""
        dataset = self.build_dataset(split)
        dataset.target_fn = None
        checked = self.datasets.get(split)
        if checked is not None and hasattr(checked, "samples") and hasattr(dataset, "samples"):
            dataset.samples = list(checked.samples)
        return dataset

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        world, rank = self._world()
        sampler = SeededTrainSampler(len(self.datasets["train"]), seed=self.seed, num_replicas=world, rank=rank)
        return self._loader("train", self.per_device_batch(self.batch_size), sampler)

    def continue_interrupted_epoch(self, trainer: pl.Trainer) -> int:
        """On a resume from a mid-epoch checkpoint, continue the epoch where it stopped
        (`segsuite.data.resume.continue_interrupted_epoch`); return the batches skipped."""
        return resume.continue_interrupted_epoch(trainer)

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup("validate" if split == "val" else "test")
        world, rank = self._world()
        sampler = ShardedEvalSampler(len(self.datasets[split]), num_replicas=world, rank=rank)
        return self._loader(split, self.per_device_batch(self.val_batch_size), sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
