"""Class weights from data: formulas by hand, `weight: auto` resolution and caching, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.losses import class_weights
from segsuite.losses.class_weights import compute_class_weights, resolve_auto_weights

ROOT = Path(__file__).resolve().parents[1]


class Masks:
    """A minimal dataset: items with a raw numpy mask (what datasets return with transform=None)."""

    name = "toy"
    split = "train"
    classes = ("a", "b", "c")
    num_classes = 3
    ignore_index = 255

    def __init__(self):
        # image 0: 6 px of a, 2 px of b; image 1: 2 px of a, 4 px of c, 2 ignored
        self.masks = [np.array([[0, 0, 0, 0], [0, 0, 1, 1]]), np.array([[0, 0, 2, 2], [2, 2, 255, 255]])]

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return {"mask": self.masks[i], "image": None, "name": str(i)}


def test_median_frequency_by_hand():
    # freq = pixels of the class / pixels of the images holding it: a 8/14, b 2/8, c 4/6; median a
    fa, fb, fc = 8 / 14, 2 / 8, 4 / 6
    median = fa
    expected = [median / fa, median / fb, median / fc]
    assert compute_class_weights(Masks(), 3, "median_frequency") == pytest.approx(expected)


def test_enet_by_hand():
    p = np.array([8, 2, 4]) / 14
    expected = [1 / math.log(1.02 + x) for x in p]
    assert compute_class_weights(Masks(), 3, "enet", c=1.02) == pytest.approx(expected)


def test_resolve_auto_nested_caches_and_builds(tmp_path, monkeypatch):
    cfg = OmegaConf.create({
        "dataset": {"ignore_index": 255},
        "loss": OmegaConf.load(ROOT / "conf" / "loss" / "boundary.yaml"),
    })
    cfg.loss.region.weight = "auto"
    resolve_auto_weights(cfg.loss, Masks(), tmp_path, "enet")
    expected = compute_class_weights(Masks(), 3, "enet")
    assert list(cfg.loss.region.weight) == pytest.approx(expected)
    cache = json.loads((tmp_path / "class_weights.json").read_text())
    assert next(iter(cache.values())) == pytest.approx(expected) and "toy-train" in next(iter(cache))
    loss = instantiate(cfg.loss)  # the interpolated ignore_index still resolves
    assert loss.ignore_index == 255 and torch.allclose(loss.region.weight, torch.tensor(expected))
    # a second resolution reads the cache instead of the data
    monkeypatch.setattr(class_weights, "compute_class_weights", lambda *a, **k: pytest.fail("recomputed"))
    again = OmegaConf.create({"weight": "auto"})
    assert list(resolve_auto_weights(again, Masks(), tmp_path, "enet").weight) == pytest.approx(expected)


def test_config_without_auto_is_untouched(tmp_path):
    cfg = OmegaConf.create({"weight": None, "smooth": 1.0})
    assert resolve_auto_weights(cfg, Masks(), tmp_path, "enet") == {"weight": None, "smooth": 1.0}
    assert not (tmp_path / "class_weights.json").exists()


def test_explicit_weight_list_from_command_line_override():
    cfg = OmegaConf.create({"dataset": {"ignore_index": 255},
                            "loss": OmegaConf.load(ROOT / "conf" / "loss" / "ce.yaml")})
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["loss.weight=[1,2,3]"]))
    loss = instantiate(cfg.loss)
    assert torch.equal(loss.weight, torch.tensor([1.0, 2.0, 3.0]))


def test_cli_prints_override(tmp_path, capsys, monkeypatch):
    from segsuite.tools import compute_class_weights as cli

    weights = cli.class_weights(["synthetic", "dataset.train.num_images=4", "dataset.image_size=[32,32]",
                        "--method", "enet", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.strip().startswith("class_weights=[") and len(weights) == 6
    assert all(w > 0 for w in weights)


def test_cache_key_tells_copies_at_different_roots_apart(tmp_path):
    from segsuite.data.datasets import CamVid
    from support.dataset_trees import build_camvid_tree

    names = [str(i) for i in range(11)]
    first = CamVid(build_camvid_tree(tmp_path / "a"), split="train", class_names=names)
    second = CamVid(build_camvid_tree(tmp_path / "b"), split="train", class_names=names)
    key = class_weights.cache_key(first, 11, "enet", 1.02)
    assert key != class_weights.cache_key(second, 11, "enet", 1.02)
    assert key == class_weights.cache_key(CamVid(tmp_path / "a" / "CamVid", split="train", class_names=names),
                                          11, "enet", 1.02)
