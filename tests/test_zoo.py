"""The model zoo: every entry's checkpoint, record, results page and figures agree; `segsuite.reproduce`
passes inside the band and fails outside it, naming the metric and the band, and refuses a band
verdict on data other than the entry's (images missing, labels changed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from runs import run_module
from segsuite.checkpoint import build_net, load_checkpoint
from segsuite.reproduce import DATA_DIFFER, split_label_lines
from segsuite.zoo import REQUIRED_KEYS, available, data_fingerprint, data_record, load_entry, outside_band, sha256_of
from support.dataset_trees import build_camvid_tree

REPO = Path(__file__).resolve().parents[1]
ENTRIES = available()


def test_the_zoo_is_not_empty():
    assert "camvid_enet" in ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_checkpoint_matches_its_record(name):
    entry = load_entry(name)
    assert all(key in entry.record for key in REQUIRED_KEYS)
    assert sha256_of(entry.checkpoint) == entry.record.sha256
    assert entry.checkpoint.stat().st_size < 5e6, "zoo checkpoints carry weights only (no optimizer state)"
    ckpt = load_checkpoint(entry.checkpoint)
    assert "optimizer_states" not in ckpt
    net = build_net(ckpt)
    assert sum(p.numel() for p in net.parameters()) == entry.record.parameters
    assert list(entry.record.per_class) == list(ckpt["segsuite"]["class_names"])
    # the recipe it names exists and the stored config names no path of the training machine
    assert (REPO / "conf" / "experiment" / f"{entry.experiment}.yaml").is_file()
    assert str(ckpt["segsuite"]["config"]["dataset"]["root"]).startswith("data/")
    # the mean of the per-class IoUs is the recorded mIoU
    ious = [float(v.iou) for v in entry.record.per_class.values()]
    assert sum(ious) / len(ious) == pytest.approx(float(entry.record.metrics.mIoU), abs=1e-3)


@pytest.mark.parametrize("name", ENTRIES)
def test_results_page_and_figures_agree_with_the_entry(name):
    entry = load_entry(name)
    page = (REPO / "docs" / "results" / f"{name}.md").read_text()
    assert f"| mIoU | {100 * float(entry.record.metrics.mIoU):.1f} |" in page
    for cls, scores in entry.record.per_class.items():
        assert f"| {cls} | {100 * float(scores.iou):.1f} | {100 * float(scores.acc):.1f} |" in page
    for figure in ("learning_curve.png", "confusion_matrix.png", "samples.png"):
        assert (REPO / "docs" / "results" / name / figure).is_file()
        assert f"{name}/{figure}" in page
    assert entry.record.sha256 in page and entry.record.commit in page


def test_outside_band_names_metric_and_band():
    band = {"mIoU": (0.5, 0.6), "aAcc": (0.8, 0.9)}
    assert outside_band({"mIoU": 0.55, "aAcc": 0.85}, band) == []
    failures = outside_band({"mIoU": 0.45}, band)
    assert failures[0] == "mIoU = 0.45000 is outside the recorded band [0.5000, 0.6000]"
    assert failures[1].startswith("aAcc: not measured")


def test_band_messages_show_why_a_value_fails():
    # issue 27.3: fwIoU 0.767796 printed as 0.7678 looked inside [0.7678, 0.7718]
    band = {"fwIoU": (0.7678, 0.7718), "mIoU": (0.5438, 0.5478)}
    failures = outside_band({"fwIoU": 0.767796, "mIoU": 0.54781}, band)
    assert failures == ["fwIoU = 0.767796 is outside the recorded band [0.7678, 0.7718]",
                        "mIoU = 0.54781 is outside the recorded band [0.5438, 0.5478]"]


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_records_the_data_it_was_measured_on(name):
    entry = load_entry(name)
    data = entry.record.data
    assert data.split == entry.record.split
    listing = REPO / "conf" / "zoo" / data.labels
    lines = listing.read_text().splitlines()
    assert len(lines) == data.images and lines == sorted(lines)
    assert data_fingerprint(lines) == data.fingerprint == sha256_of(listing)


def test_unknown_entry_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="camvid_enet"):
        load_entry("no_such_entry")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny U-Net trained one epoch on a CamVid fixture tree, published in a zoo folder of its own."""
    base = tmp_path_factory.mktemp("zoo")
    data = build_camvid_tree(base / "data")
    run = base / "run"
    run_module("train", [f"hydra.run.dir={run}", "dataset=camvid", f"dataset.root={data}", "dataset.crop_size=[12,16]",
                         "model=unet", "model.base_channels=4", "model.depth=2", "data.batch_size=2",
                         "data.num_workers=0", "trainer.max_epochs=1", "test=false", "print_config=false"], cwd=base)
    zoo = base / "zoo"
    zoo.mkdir()
    shutil.copyfile(run / "checkpoints" / "best.ckpt", zoo / "tiny.ckpt")
    record = {key: "x" for key in REQUIRED_KEYS} | {
        "experiment": "camvid_enet", "split": "test", "dataset": "camvid", "seed": 0, "checkpoint": "tiny.ckpt",
        "sha256": sha256_of(zoo / "tiny.ckpt"), "bands": {"evaluate": {"mIoU": [0.0, 1.0], "aAcc": [0.0, 1.0]}}}
    OmegaConf.save(OmegaConf.create(record), zoo / "tiny.yaml")
    return zoo, data


def reproduce(zoo: Path, data: Path, tmp_path: Path, check: bool = True):
    return run_module("reproduce", ["tiny", "--zoo-dir", str(zoo), "--data-root", str(data), "--workdir",
                                    str(tmp_path / "work"), "num_workers=0"], cwd=tmp_path, check=check)


@pytest.mark.slow  # an entry without a data fingerprint (the fast suite checks one with it)
def test_reproduce_passes_inside_the_band(tiny_zoo, tmp_path):
    proc = reproduce(*tiny_zoo, tmp_path)
    assert "every banded metric is inside its band" in proc.stdout
    assert re.search(r"mIoU\s+0\.\d{5}\s+band \[0\.0000, 1\.0000\]\s+ok", proc.stdout)
    assert "records no data fingerprint" in proc.stdout   # an entry without `data` still works, with a note


def test_reproduce_fails_outside_the_band_naming_metric_and_band(tiny_zoo, tmp_path):
    zoo, data = tiny_zoo
    record = OmegaConf.load(zoo / "tiny.yaml")
    record.bands.evaluate.mIoU = [0.999, 1.0]   # a 4-channel U-Net after one epoch on 4 images cannot reach it
    strict = tmp_path / "strict"
    strict.mkdir()
    shutil.copyfile(zoo / "tiny.ckpt", strict / "tiny.ckpt")
    OmegaConf.save(record, strict / "tiny.yaml")
    proc = reproduce(strict, data, tmp_path, check=False)
    assert proc.returncode == 1
    assert re.search(r"mIoU = 0\.\d{5} is outside the recorded band \[0\.9990, 1\.0000\]", proc.stderr)
    assert "aAcc" not in proc.stderr


def test_reproduce_refuses_a_changed_checkpoint(tiny_zoo, tmp_path):
    zoo, data = tiny_zoo
    changed = tmp_path / "changed"
    shutil.copytree(zoo, changed)
    ckpt = torch.load(changed / "tiny.ckpt", weights_only=True)
    ckpt["global_step"] = 12345
    torch.save(ckpt, changed / "tiny.ckpt")
    proc = reproduce(changed, data, tmp_path, check=False)
    assert proc.returncode == 2
    assert "has sha256" in proc.stderr and "restore it" in proc.stderr



def entry_with_data(zoo: Path, data: Path, target: Path, listing: bool = True) -> Path:
    """A copy of the tiny zoo whose entry records the fixture's test split (with or without its per-label list)."""
    shutil.copytree(zoo, target)
    lines = split_label_lines("camvid_enet", "test", str(data))
    record = OmegaConf.load(target / "tiny.yaml")
    record.data = data_record("test", lines) | ({"labels": "data/tiny_test.txt"} if listing else {})
    OmegaConf.save(record, target / "tiny.yaml")
    if listing:
        (target / "data").mkdir()
        (target / "data" / "tiny_test.txt").write_text("".join(f"{line}\n" for line in lines))
    return target


@pytest.mark.slow
def test_reproduce_checks_the_data_first_and_passes_on_the_entrys_data(tiny_zoo, tmp_path):
    zoo = entry_with_data(*tiny_zoo, tmp_path / "zoo")
    proc = reproduce(zoo, tiny_zoo[1], tmp_path)
    assert "data: 2 test images, the ones the entry was measured on" in proc.stdout
    assert "every banded metric is inside its band" in proc.stdout


@pytest.mark.parametrize("listing", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["named", "counted"])
def test_reproduce_refuses_data_with_an_image_missing(tiny_zoo, tmp_path, listing):
    zoo = entry_with_data(*tiny_zoo, tmp_path / "zoo", listing=listing)
    data = tmp_path / "CamVid"
    shutil.copytree(tiny_zoo[1], data)
    for folder in ("test", "testannot"):
        (data / folder / "Seq05VD_f00000.png").unlink()
    proc = reproduce(zoo, data, tmp_path, check=False)
    assert proc.returncode == DATA_DIFFER == 3
    assert "your data differ from the entry's: 1 image(s) missing" in proc.stderr
    assert ("(Seq05VD_f00000)" in proc.stderr) == listing
    assert "band" not in proc.stdout and "Traceback" not in proc.stderr   # no evaluation, no verdict
    assert not (tmp_path / "work").exists()


def test_reproduce_names_a_changed_label(tiny_zoo, tmp_path):
    zoo = entry_with_data(*tiny_zoo, tmp_path / "zoo")
    data = tmp_path / "CamVid"
    shutil.copytree(tiny_zoo[1], data)
    label = data / "testannot" / "0001TP_008550.png"
    pixels = np.asarray(Image.open(label)).copy()
    pixels[0, 0] = (pixels[0, 0] + 1) % 11
    Image.fromarray(pixels).save(label)
    proc = reproduce(zoo, data, tmp_path, check=False)
    assert proc.returncode == 3
    assert "1 label(s) changed (0001TP_008550)" in proc.stderr and "missing" not in proc.stderr
