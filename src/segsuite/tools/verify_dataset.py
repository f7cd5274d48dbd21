"""Scan a whole dataset split: counts, image sizes, class pixel frequencies and every bad file.

    segsuite-verify-dataset dataset=cityscapes [dataset.root=/data/cityscapes] [split=train] [workers=4]

(or `python -m segsuite.tools.verify_dataset ...`). Any other `key=value` is a Hydra override of the
composed config (e.g. `paths.data_dir=/data`).
Exits with status 1 if any file is bad (unpaired, unreadable, truncated, wrong size or labels).
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from segsuite.catalog import config_names
from segsuite.data.datasets.base import DatasetError, SegDataset
from segsuite.utils.paths import config_dir

SCRIPT_KEYS = {"split": "train", "workers": "0", "num": "8", "out": "", "seed": "0", "augment": "true"}


def parse_args(argv: list[str], doc: str = __doc__) -> tuple[str, dict[str, str], list[str]]:
    """(dataset name, script options, Hydra overrides) from `key=value` arguments; `doc` is the help text."""
    name, options, overrides = None, {}, []
    if {"-h", "--help"} & set(argv):
        print(doc)
        raise SystemExit(0)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"argument {arg!r}: expected key=value (e.g. dataset=camvid)\n{doc}")
        if key in ("dataset", "+dataset"):
            name = value
        elif key in SCRIPT_KEYS:
            options[key] = value
        else:
            overrides.append(arg)
    if name is None:
        raise SystemExit(f"give dataset=<name> (one of {', '.join(config_names('dataset'))})\n{doc}")
    return name, options, overrides


def compose_dataset_config(name: str, overrides: list[str] = ()) -> DictConfig:
    """Compose {dataset, augmentation, paths} from the packaged configs, with Hydra overrides."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(overrides=[f"+dataset={name}", "+augmentation=default", "+paths=default", *overrides])


def build_dataset(cfg: DictConfig, split: str, **kwargs) -> SegDataset:
    """Instantiate `dataset.<split>`, re-raising a dataset's own error out of Hydra's wrapper."""
    if split not in cfg.dataset or cfg.dataset[split] is None:
        raise SystemExit(f"dataset {cfg.dataset.name} has no split {split!r}")
    try:
        return instantiate(cfg.dataset[split], **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (DatasetError, ValueError)):
            raise err.__cause__ from None
        raise


class _Scan(torch.utils.data.Dataset):
    """Per sample: (name, image size, class histogram [C + 1: last = ignore]) or the error text."""

    def __init__(self, dataset: SegDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        ds = self.dataset
        try:
            image, mask, _ = ds.load_valid(index)  # the very checks training and data.verify=full make
        except DatasetError as err:
            return index, None, None, str(err)
        labels = np.where(mask == ds.ignore_index, ds.num_classes, mask)
        return index, image.shape[:2], np.bincount(labels.ravel(), minlength=ds.num_classes + 1), None


def scan(dataset: SegDataset, workers: int = 0, progress: bool = True) -> dict:
    """Load every sample; return counts, sizes, pixel histogram, images per class and bad samples."""
    loader = torch.utils.data.DataLoader(_Scan(dataset), batch_size=None, num_workers=workers,
                                         collate_fn=lambda item: item)
    pixels = np.zeros(dataset.num_classes + 1, dtype=np.int64)
    images_with = np.zeros(dataset.num_classes + 1, dtype=np.int64)
    sizes: Counter = Counter()
    bad: list[str] = []
    for _, size, hist, error in tqdm(loader, total=len(dataset), desc="scanning", unit="img", disable=not progress):
        if error is not None:
            bad.append(error)
            continue
        sizes[tuple(int(v) for v in size)] += 1
        pixels += hist
        images_with += hist > 0
    return {"count": len(dataset), "good": len(dataset) - len(bad), "sizes": sizes, "pixels": pixels,
            "images_with": images_with, "bad": bad}


def report(dataset: SegDataset, result: dict, unpaired: list[str]) -> str:
    """Human-readable summary of `scan` results."""
    total = max(int(result["pixels"].sum()), 1)
    lines = [f"{result['count']} samples, {result['good']} good, {len(result['bad']) + len(unpaired)} bad",
             "image sizes (H x W): " + ", ".join(f"{h}x{w}: {n}" for (h, w), n in result["sizes"].most_common(5))
             + (" ..." if len(result["sizes"]) > 5 else ""),
             f"{'id':>4}  {'class':<24} {'pixels':>14} {'share':>8} {'images':>8}"]
    names = list(dataset.classes) + [f"(ignore {dataset.ignore_index})"]
    for k, name in enumerate(names):
        label = k if k < dataset.num_classes else dataset.ignore_index
        lines.append(f"{label:>4}  {name[:24]:<24} {int(result['pixels'][k]):>14} "
                     f"{result['pixels'][k] / total:>8.2%} {int(result['images_with'][k]):>8}")
    absent = [names[k] for k in range(dataset.num_classes) if result["pixels"][k] == 0]
    if absent:
        lines.append(f"classes with no pixels: {', '.join(absent)}")
    for problem in unpaired + result["bad"]:
        lines.append(f"BAD: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    name, options, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    options = {**SCRIPT_KEYS, **options}
    cfg = compose_dataset_config(name, overrides)
    with warnings.catch_warnings(record=True) as caught:  # unpaired files: collected, not fatal
        warnings.simplefilter("always")
        dataset = build_dataset(cfg, options["split"], transform=None, skip_bad=True)
    unpaired = [str(w.message) for w in caught if "skipping" in str(w.message)]
    dataset.skip_bad = False
    print(f"{cfg.dataset.name} / {options['split']}: {len(dataset)} paired samples")
    result = scan(dataset, workers=int(options["workers"]))
    print(report(dataset, result, unpaired))
    return 1 if result["bad"] or unpaired else 0


if __name__ == "__main__":
    sys.exit(main())
