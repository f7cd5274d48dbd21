"""README.md's "Extending" section, followed to the letter in a copy of the repository: one new dataset,
one loss and one model, each with exactly the files and the name that section lists, and nothing else.
The catalog then lists them, their configs build, and the shared checks the section promises enumerate
them (collected here; run in the slow suite)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASET, LOSS, MODEL = "stripes", "brier", "tinynet"

DATASET_MODULE = '''"""Stripes: road scenes seen from above, three classes; label 3 (void) -> ignore."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segsuite.data import io as dataio
from segsuite.data.datasets.base import IGNORE_INDEX
from segsuite.data.datasets.folder import ImageMaskDataset


class Stripes(ImageMaskDataset):
    official_image_size = (240, 320)
    tree = """  <root>/
    images/{train,val}/<name>.png
    labels/{train,val}/<name>.png      grey PNG: 0..2 classes, 3 = void"""
    download = "https://example.org/stripes (stripes.zip)"
    raw_label_values = (0, 1, 2, 3)
    label_encoding = "png_grey"

    def __init__(self, root: str | Path, split: str = "train", class_names: Sequence[str] = (),
                 palette: Sequence[Sequence[int]] | None = None, **kwargs) -> None:
        super().__init__(class_names, palette, expected_classes=3, **kwargs)
        args = ("Stripes", self.tree, self.download)
        root = dataio.require_dir(Path(root), *args)
        images = dataio.index_files(dataio.require_dir(root / "images" / split, *args), ".png")
        labels = dataio.index_files(dataio.require_dir(root / "labels" / split, *args), ".png")
        self.samples = dataio.pair_files(images, labels, "Stripes", self.skip_bad, left_out=self.left_out)
        self.lut = dataio.build_lut({0: 0, 1: 1, 2: 2, 3: IGNORE_INDEX, IGNORE_INDEX: IGNORE_INDEX})

    def read_mask(self, path: Path) -> np.ndarray:
        return dataio.apply_lut(dataio.read_label_png(path), self.lut, path)
'''

DATASET_SPLIT = """  _target_: segsuite.data.datasets.stripes.Stripes
  root: ${dataset.root}
  split: %s
  class_names: ${dataset.class_names}
  palette: ${dataset.palette}
"""
DATASET_YAML = """# Stripes: road scenes seen from above, 3 classes.
name: stripes
root: ${paths.data_dir}/stripes
num_classes: 3
crop_size: [64, 64]
ignore_index: 255
mean: [0.485, 0.456, 0.406]
std: [0.229, 0.224, 0.225]
class_names: [background, road, lane]
palette: [[0, 0, 0], [128, 64, 128], [255, 255, 255]]
""" + "".join(f"{split}:\n" + DATASET_SPLIT % folder for split, folder in (("train", "train"), ("val", "val"),
                                                                          ("test", "val")))

TREE_BUILDER = '''

# -- Stripes (added by tests/test_extending.py) ---------------------------------------------------
from segsuite.data.datasets.stripes import Stripes  # noqa: E402


@tree_of(Stripes)
def build_stripes_tree(root: Path) -> Path:
    base = Path(root) / "stripes"
    for split, count in (("train", 4), ("val", 2)):
        for n in range(count):
            name = f"stripes_{split}_{n}"
            write_image(base / "images" / split / f"{name}.png", random_image(name))
            write_raw_labels(Stripes, base / "labels" / split / f"{name}.png", name)
    return base
'''

LOSS_MODULE = '''"""The Brier score of the softmax."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from segsuite.losses.base import SegLoss, safe_div


class BrierLoss(SegLoss):
    """sum_c (p_c - onehot_c)^2 per pixel, the class-weighted mean over non-ignored pixels."""

    def __init__(self, weight: Sequence[float] | None = None, ignore_index: int = 255) -> None:
        super().__init__(ignore_index, weight)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, extras: Mapping[str, Any]) -> torch.Tensor:
        probs, onehot, _ = self.probs_onehot(logits, target)
        valid, labels = self.valid_and_labels(target)
        weights = self.class_weights_for(labels, valid)
        return safe_div((((probs - onehot) ** 2).sum(1) * weights).sum(), weights.sum())
'''
LOSS_YAML = """# The Brier score of the softmax.
_target_: segsuite.losses.brier.BrierLoss
weight: ${oc.select:class_weights,null}  # per-class weights: the run's class_weights (null | auto | list of C floats)
ignore_index: ${dataset.ignore_index}
"""

MODEL_MODULE = '''"""TinyNet: two 3x3 convolutions and a 1x1 classifier."""

from __future__ import annotations

import torch
from torch import nn

from segsuite.models.base import SegmentationModel


class TinyNet(SegmentationModel):
    paper_crop = (64, 64)
    paper_dataset = "Stripes"

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__(num_classes)
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, num_classes, 1))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
'''
MODEL_YAML = """# TinyNet: two 3x3 convolutions and a 1x1 classifier.
_target_: segsuite.models.tinynet.TinyNet
num_classes: ${dataset.num_classes}
width: 8   # channels of the two convolutions
"""

# The shared checks README's table promises for each kind, as test files and the tests in them that
# must enumerate the new entry (a node id naming it).
PROMISED = {
    DATASET: {"tests/test_catalog.py": ["test_every_dataset_that_reads_files_has_a_miniature_tree",
                                        "test_every_dataset_that_reads_files_declares_its_files"],
              "tests/test_datasets.py": ["test_train_pipeline_pads_masks_with_ignore"],
              "tests/test_datasets_errors.py": ["test_missing_root_names_tree_and_download"],
              "tests/test_configs.py": ["test_train_fast_dev_run_on_each_dataset", "test_every_group_option_composes"],
              "tests/test_datasets_speed.py": ["test_one_worker_keeps_up"]},
    LOSS: {"tests/test_losses_properties.py": ["test_ignored_pixels_change_neither_value_nor_gradient",
                                               "test_gradients_are_finite_and_present",
                                               "test_uniform_class_weights_equal_no_weights"],
           "tests/test_configs.py": ["test_every_loss_config_builds"]},
    MODEL: {"tests/test_models.py": ["test_forward_backward_odd_size", "test_state_dict_round_trip",
                                     "test_jit_trace_matches_eager", "test_every_model_states_its_paper_setting"],
            "tests/test_configs.py": ["test_every_model_config_builds"]},
}


def extending_section() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("## Extending"):text.index("\n## ", text.index("## Extending") + 1)]


def add_to_readme_row(readme: Path, group: str, name: str) -> None:
    """`name` appended to the options of the Configuration table's `group` row."""
    lines = readme.read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if line.startswith(f"| `{group}` |"))
    cells = lines[i].split("|")
    cells[2] = cells[2].rstrip() + f" `{name}` "
    lines[i] = "|".join(cells)
    readme.write_text("".join(lines))


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    """A copy of the repository (src, conf, docs, tests, scripts, README, pyproject) with one dataset, one
    loss and one model added exactly as README.md's "Extending" section says."""
    section = extending_section()
    for promised in ("src/segsuite/data/datasets/<name>.py", "conf/dataset/<name>.yaml", "@tree_of(<class>)",
                     "tests/support/dataset_trees.py", "src/segsuite/losses/<family>.py", "conf/loss/<name>.yaml",
                     "src/segsuite/models/<name>.py", "conf/model/<name>.yaml", "row of the Configuration table"):
        assert promised in section, f"README's Extending section no longer says {promised!r}: update this test"
    copy = tmp_path_factory.mktemp("extended")
    skip = shutil.ignore_patterns("__pycache__", "*.ckpt", ".pytest_cache", "outputs")
    for folder in ("src", "conf", "docs", "tests", "scripts"):
        shutil.copytree(REPO / folder, copy / folder, ignore=skip)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(REPO / name, copy / name)
    # a dataset: its class, its config, its miniature tree on the test side, its README name
    (copy / "src/segsuite/data/datasets" / f"{DATASET}.py").write_text(DATASET_MODULE)
    (copy / "conf/dataset" / f"{DATASET}.yaml").write_text(DATASET_YAML)
    with open(copy / "tests/support/dataset_trees.py", "a") as fh:
        fh.write(TREE_BUILDER)
    # a loss: its module (a family of its own), its config, its README name
    (copy / "src/segsuite/losses" / f"{LOSS}.py").write_text(LOSS_MODULE)
    (copy / "conf/loss" / f"{LOSS}.yaml").write_text(LOSS_YAML)
    # a model: its module, its config, its README name
    (copy / "src/segsuite/models" / f"{MODEL}.py").write_text(MODEL_MODULE)
    (copy / "conf/model" / f"{MODEL}.yaml").write_text(MODEL_YAML)
    for group, name in (("dataset", DATASET), ("loss", LOSS), ("model", MODEL)):
        add_to_readme_row(copy / "README.md", group, name)
    return copy


def run_in(copy: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python args...` in the copy, importing the copy's segsuite and test side (not this checkout's)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy / "src"), str(copy / "tests")]),
           "WANDB_MODE": "offline", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


CATALOG_PROBE = """
import json, segsuite, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from segsuite import catalog
from support import dataset_trees as trees

out = {"segsuite": segsuite.__file__, "conf": str(catalog.config_dir()),
       "names": {g: catalog.config_names(g) for g in ("dataset", "loss", "model")},
       "architectures": catalog.architectures(), "paper": list(catalog.paper_crop("tinynet")),
       "official": list(catalog.official_image_size("stripes")), "trees": trees.datasets_with_trees()}
root = trees.tree_builder("stripes")(__import__("pathlib").Path("tree"))
cfg = trees.compose("stripes", "data", [f"dataset.root={root}"])
ds = instantiate(cfg.dataset.train, transform=None)
out["samples"] = len(ds)
out["mask_values"] = sorted({int(v) for i in range(len(ds)) for v in ds[i]["mask"].ravel()})
loss_cfg = OmegaConf.create({"dataset": {"ignore_index": 255}, "loss": catalog.group_config("loss", "brier")})
out["loss"] = type(instantiate(loss_cfg.loss)).__name__
net_cfg = OmegaConf.create({"dataset": {"num_classes": 3}, "model": catalog.model_config("tinynet")})
out["logits"] = list(instantiate(net_cfg.model)(torch.zeros(1, 3, 33, 47)).shape)
print("PROBE" + json.dumps(out))
"""


def test_the_new_entries_are_in_the_catalog_and_build(extended):
    proc = run_in(extended, "-c", CATALOG_PROBE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("PROBE", 1)[1])
    assert Path(out["segsuite"]).is_relative_to(extended) and Path(out["conf"]) == extended / "conf"
    assert DATASET in out["names"]["dataset"] and LOSS in out["names"]["loss"] and MODEL in out["names"]["model"]
    assert MODEL in out["architectures"] and out["paper"] == [64, 64] and out["official"] == [240, 320]
    assert DATASET in out["trees"]
    assert out["samples"] == 4 and set(out["mask_values"]) <= {0, 1, 2, 255}
    assert out["loss"] == "BrierLoss" and out["logits"] == [1, 3, 33, 47]


@pytest.mark.slow
def test_the_shared_checks_enumerate_the_new_entries(extended):
    files = sorted({f for checks in PROMISED.values() for f in checks})
    proc = run_in(extended, "-m", "pytest", "--collect-only", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider",
                  *files)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    for name, checks in PROMISED.items():
        for path, tests in checks.items():
            for test in tests:
                assert any(i.startswith(f"{path}::{test}[") and re.search(rf"\b{name}\b", i) for i in ids), \
                    f"{path}::{test} does not enumerate {name}"


@pytest.mark.slow
def test_the_new_entries_pass_the_shared_checks(extended):
    """The promised checks, run on the new entries (and tests/test_catalog.py as a whole: README rows,
    trees, declarations)."""
    files = sorted({f for checks in PROMISED.values() for f in checks} - {"tests/test_datasets_speed.py"})
    selected = run_in(extended, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                      f"{DATASET} or {LOSS} or {MODEL}", *files, timeout=1200)
    assert selected.returncode == 0, selected.stdout[-5000:] + selected.stderr[-3000:]
    assert re.search(r"\b(\d+) passed", selected.stdout)
    whole = run_in(extended, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_catalog.py", timeout=600)
    assert whole.returncode == 0, whole.stdout[-5000:] + whole.stderr[-3000:]
