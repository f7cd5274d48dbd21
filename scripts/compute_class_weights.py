#!/usr/bin/env python3
"""Compute (and cache) class weights of a dataset's training split and print them as an override.

    python scripts/compute_class_weights.py synthetic --method median_frequency
    python scripts/compute_class_weights.py cityscapes --method enet --c 1.02 dataset.root=/data/cityscapes

Loads conf/dataset/<name>.yaml, applies `key=value` overrides (dotted, relative to the config
root, e.g. dataset.root=...), builds the split with transform=None and prints
`loss.weight=[...]`, ready for the command line of `python -m segsuite.train`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.catalog import group_config
from segsuite.losses.class_weights import METHODS, resolve_auto_weights

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="name of a config in conf/dataset/ (e.g. cityscapes)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. dataset.root=/data/x")
    parser.add_argument("--method", choices=METHODS, default="median_frequency")
    parser.add_argument("--c", type=float, default=1.02, help="ENet's constant c")
    parser.add_argument("--split", default="train")
    parser.add_argument("--conf-dir", type=Path, default=CONF_DIR)
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs") / "cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    path = args.conf_dir / "dataset" / f"{args.dataset}.yaml"
    try:
        dataset_cfg = group_config("dataset", args.dataset, args.conf_dir)
    except FileNotFoundError as err:
        sys.exit(str(err))
    cfg = OmegaConf.merge({"dataset": dataset_cfg}, OmegaConf.from_dotlist(args.overrides))
    if args.split not in cfg.dataset or cfg.dataset[args.split] is None:
        sys.exit(f"{path} has no '{args.split}' split")
    dataset = instantiate(cfg.dataset[args.split], transform=None)
    loss_cfg = OmegaConf.create({"weight": "auto"})
    weights = list(resolve_auto_weights(loss_cfg, dataset, args.cache_dir, args.method, args.c).weight)
    print("loss.weight=[" + ",".join(f"{w:.4f}" for w in weights) + "]")
    return weights


if __name__ == "__main__":
    main()
