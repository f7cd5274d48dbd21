"""Compute (and cache) class weights of a dataset's training split and print them as an override.

    segsuite-class-weights synthetic --method median_frequency
    segsuite-class-weights cityscapes --method enet --c 1.02 dataset.root=/data/cityscapes

Loads conf/dataset/<name>.yaml, applies `key=value` overrides (dotted, relative to the config
root, e.g. dataset.root=...), builds the split with transform=None and prints
`class_weights=[...]`, ready for the command line of `python -m segsuite.train`.
(Also `python -m segsuite.tools.compute_class_weights ...`.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.catalog import group_config, group_dir
from segsuite.losses.class_weights import METHODS, training_class_weights


def class_weights(argv: list[str] | None = None) -> list[float]:
    """Parse `argv`, compute the weights, print the override and return the weights."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="name of a config in conf/dataset/ (e.g. cityscapes)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. dataset.root=/data/x")
    parser.add_argument("--method", choices=METHODS, default="median_frequency")
    parser.add_argument("--c", type=float, default=1.02, help="ENet's constant c")
    parser.add_argument("--split", default="train")
    parser.add_argument("--conf-dir", type=Path, default=None, help="config root (default: segsuite's own conf/)")
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs") / "cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    path = group_dir("dataset", args.conf_dir) / f"{args.dataset}.yaml"
    try:
        dataset_cfg = group_config("dataset", args.dataset, args.conf_dir)
    except FileNotFoundError as err:
        sys.exit(str(err))
    cfg = OmegaConf.merge({"dataset": dataset_cfg}, OmegaConf.from_dotlist(args.overrides))
    if args.split not in cfg.dataset or cfg.dataset[args.split] is None:
        sys.exit(f"{path} has no '{args.split}' split")
    dataset = instantiate(cfg.dataset[args.split], transform=None)
    weights = training_class_weights(dataset, args.cache_dir, args.method, args.c)
    print("class_weights=[" + ",".join(f"{w:.4f}" for w in weights) + "]")
    return weights


def main(argv: list[str] | None = None) -> int:
    class_weights(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
