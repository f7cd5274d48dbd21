"""SegDataModule: builds split datasets and their pipelines from the dataset/augmentation configs."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from segsuite.data.datasets.base import DatasetError, SegDataset
from segsuite.data.samplers import SeededTrainSampler, ShardedEvalSampler
from segsuite.data.transforms import DeviceNormalize, build_pipeline, split_off_normalize
from segsuite.data.verify import VerifyReport, bad_files_error, split_is_empty_error, verify_split

log = logging.getLogger(__name__)


def collate(items: list[dict[str, Any]], ignore_index: int = 255, split: str = "") -> dict[str, Any]:
    """Stack tensors (names stay a list). Images of different sizes (validation on full images of
    VOC, ADE20K, COCO) are padded at the bottom/right: images with 0, masks with `ignore_index`,
    so padding never counts in metrics or losses. Per-pixel extras (distance maps) pad with 0;
    tensors without spatial dims (e.g. class-id lists) are stacked as they are.

    Items of bad samples (`data.skip_bad`: `{"name", "skipped": message}`) are dropped, nothing
    takes their place, and their messages travel with the batch as `batch["skipped"]` (a list of
    `(split, message)`): the batch is how a worker process reports them to the main process, where
    `SegDataModule.on_before_batch_transfer` records them. A batch of bad samples only holds no
    images (`image` of shape [0, 3, 1, 1]); the module skips it.
    """
    batch: dict[str, Any] = {}
    skipped = [(split, item["skipped"]) for item in items if "skipped" in item]
    if skipped:
        batch["skipped"] = skipped
        items = [item for item in items if "skipped" not in item]
        if not items:
            return {**batch, "image": torch.zeros(0, 3, 1, 1), "mask": torch.zeros(0, 1, 1, dtype=torch.int64),
                    "name": []}
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    for key in items[0]:
        values = [item[key] for item in items]
        if not isinstance(values[0], torch.Tensor):
            batch[key] = values
            continue
        if values[0].ndim >= 2 and any(v.shape[-2:] != (height, width) for v in values):
            fill = ignore_index if key == "mask" else 0
            values = [F.pad(v, (0, width - v.shape[-1], 0, height - v.shape[-2]), value=fill) for v in values]
        batch[key] = _stack(values)
    return batch


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """`torch.stack`; `[C,H,W]` views of HWC pixels stack into a channels_last batch without transposing."""
    if values[0].ndim == 3 and values[0].shape[0] > 1 and all(
            v.permute(1, 2, 0).is_contiguous() for v in values):
        return torch.stack([v.permute(1, 2, 0) for v in values]).permute(0, 3, 1, 2)
    return torch.stack(values)


def add_skipped(skipped: dict[str, list[str]], entries: Iterable[tuple[str, str]]) -> None:
    """Add `(split, message)` entries to `skipped` (split -> messages), each message once."""
    for split, message in entries:
        known = skipped.setdefault(split, [])
        if message not in known:
            known.append(message)


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


def batches_done_in_resumed_epoch(trainer: pl.Trainer | None) -> int:
    """Training batches of the current epoch that a checkpoint being resumed had already run (0 when
    the run is not resuming, or resumes at an epoch boundary).

    Lightning then runs only the epoch's remaining batches; `SegDataModule.continue_interrupted_epoch`
    makes them the ones the interrupted run had not reached.
    """
    if trainer is None or not trainer.fit_loop.restarting:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def restart_training_iterator(trainer: pl.Trainer) -> None:
    """Rebuild the fit loop's training iterator (Lightning keeps the one it made before restoring a
    checkpoint). The one place that touches Lightning's private loop state;
    tests/test_run_safety.py fails if Lightning changes it."""
    fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
    if fetcher is None:
        raise RuntimeError("pytorch_lightning's fit loop has no `_data_fetcher`: segsuite's mid-epoch resume "
                           "needs updating for this Lightning version")
    iter(fetcher)


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
        normalize_on_device: move the pipelines' final `albumentations.Normalize` onto the device:
            workers ship uint8 images and masks (4x and 8x fewer bytes, no float conversion in
            the worker), and `on_after_batch_transfer` applies the same normalisation to the batch.
        target_fn: extra per-pixel targets the loss asks for (its `target_fn`, e.g. distance
            maps), computed from each transformed mask in the workers; None: none.
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
        self.augmentation_cfg = augmentation
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
        self.normalize_on_device = normalize_on_device
        self.verify = verify
        self.cache_dir = cache_dir
        # split -> messages naming every sample left out (skip_bad): unpaired files and files that failed
        # the check, then files found bad while in use (reported by the workers through their batches)
        self.skipped: dict[str, list[str]] = {}
        self._found_in_use: dict[str, set[str]] = {}  # split -> bad samples met in batches
        # The normalisation moved out of the pipelines (None: the workers normalise).
        self.device_normalize: DeviceNormalize | None = None
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
                pipeline, moved = self._pipeline("train" if split == "train" else "val")
                self.datasets[split] = self.build_dataset(split, build_pipeline(pipeline), uint8_output=moved)
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
            self.record_skipped((split, message) for message in [*getattr(dataset, "left_out", ()), *report.bad])
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

    def record_skipped(self, entries: Iterable[tuple[str, str]]) -> None:
        """Add `(split, message)` entries to `skipped` (each message once)."""
        add_skipped(self.skipped, entries)

    def skipped_everywhere(self) -> dict[str, list[str]]:
        """`skipped`, merged over the processes of a distributed run (each reads other samples): a
        collective call there, which every process makes."""
        parts: list[Any] = [self.skipped]
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, self.skipped)
        merged: dict[str, list[str]] = {}
        for part in parts:
            add_skipped(merged, ((split, m) for split, messages in (part or {}).items() for m in messages))
        return merged

    def _pipeline(self, name: str) -> tuple[DictConfig, bool]:
        """`augmentation.<name>`, without its final Normalize if that moves onto the device."""
        pipeline = self.augmentation_cfg[name]
        if not self.normalize_on_device:
            return pipeline, False
        stripped, normalize = split_off_normalize(pipeline)
        if normalize is None:
            return pipeline, False
        if self.device_normalize is not None and normalize != self.device_normalize:
            raise ValueError(
                f"augmentation.{name} normalises with mean {normalize.mean}, std {normalize.std}, but another "
                f"pipeline uses mean {self.device_normalize.mean}, std {self.device_normalize.std}; use one "
                f"normalisation for every split, or set data.normalize_on_device=false"
            )
        self.device_normalize = normalize
        return stripped, True

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the bad samples `collate` dropped from the batch (`skipped`), in the main process; raise
        once every sample of a split this process reads has turned out bad."""
        if isinstance(batch, dict) and "skipped" in batch:
            batch = dict(batch)
            entries = batch.pop("skipped")
            self.record_skipped(entries)
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
        batch = dict(batch)
        if batch["image"].dtype == torch.uint8:
            if self.device_normalize is None:
                raise RuntimeError("uint8 images reached the device but no normalisation was moved there; "
                                   "this datamodule's pipelines must end with albumentations.Normalize")
            batch["image"] = self.device_normalize(batch["image"])
        if isinstance(batch.get("mask"), torch.Tensor) and batch["mask"].dtype != torch.int64:
            batch["mask"] = batch["mask"].long()
        return batch

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

    def per_device_batch(self, global_batch: int) -> int:
        """global_batch / world size; raises if it does not divide."""
        world, _ = self._world()
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
        if self.batch_size % world_size:
            raise ValueError(f"data.batch_size={self.batch_size} is the global batch and must divide by the "
                             f"{world_size} processes; set data.batch_size to a multiple of {world_size}.")
        per_device = self.batch_size // world_size
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
        """`split` without transforms (uint8 images, int64 masks), holding the samples `check_splits` kept."""
        dataset = self.build_dataset(split)
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
        """On a resume from a checkpoint written mid-epoch, make the training loader continue the epoch
        where the checkpoint left it; return the batches skipped (0 when not resuming mid-epoch).

        Lightning builds the training iterator before it restores the checkpoint (to count the
        stepping batches for the schedule), so that iterator would start the epoch over. The
        sampler is set to the checkpoint's epoch and position, and the loop's iterator rebuilt.
        """
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        done = batches_done_in_resumed_epoch(trainer)
        if not isinstance(sampler, SeededTrainSampler) or not 0 < done < trainer.num_training_batches:
            return 0
        sampler.set_epoch(trainer.current_epoch)
        sampler.start_next_epoch_at(done * loader.batch_size)
        restart_training_iterator(trainer)
        log.info("resuming mid-epoch: epoch %d continues at its batch %d of %d", trainer.current_epoch + 1, done + 1,
                 trainer.num_training_batches)
        return done

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup("validate" if split == "val" else "test")
        world, rank = self._world()
        sampler = ShardedEvalSampler(len(self.datasets[split]), num_replicas=world, rank=rank)
        return self._loader(split, self.per_device_batch(self.val_batch_size), sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
