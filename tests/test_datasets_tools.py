"""segsuite.tools: verify_dataset, browse_dataset and prepare_voc_aug."""

from __future__ import annotations

import importlib

import numpy as np
from PIL import Image

from support import dataset_trees as trees


def load_script(name: str):
    return importlib.import_module(f"segsuite.tools.{name}")


def test_verify_dataset_reports_counts_and_frequencies(tmp_path, capsys):
    root = trees.build_ade20k_tree(tmp_path)
    verify = load_script("verify_dataset")
    assert verify.main(["dataset=ade20k", f"dataset.root={root}", "split=val"]) == 0
    out = capsys.readouterr().out
    assert "2 samples, 2 good, 0 bad" in out and "12x16: 2" in out
    raw = np.concatenate([np.array(Image.open(p)).ravel()
                          for p in sorted((root / "annotations/validation").glob("*.png"))])
    wall_pixels = int((raw == 1).sum())  # ADE label 1 = wall = train id 0
    ignore_pixels = int((raw == 0).sum())
    assert any(line.split()[:3] == ["0", "wall", str(wall_pixels)] for line in out.splitlines())
    assert any(line.split()[0] == "255" and str(ignore_pixels) in line.split() for line in out.splitlines())


def test_verify_dataset_lists_every_bad_file(tmp_path, capsys):
    root = trees.build_camvid_tree(tmp_path)
    (root / "train" / "0001TP_006720.png").write_bytes(b"junk")
    (root / "trainannot" / "0016E5_00390.png").unlink()
    trees.write_grey_png(root / "trainannot" / "0016E5_00420.png", np.full(trees.SIZE, 77, np.uint8))
    verify = load_script("verify_dataset")
    assert verify.main(["dataset=camvid", f"paths.data_dir={tmp_path}"]) == 1
    bad = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD:")]
    assert len(bad) == 3
    for name in ("0001TP_006720.png", "0016E5_00390.png", "0016E5_00420.png"):
        assert sum(name in line for line in bad) == 1


def test_browse_dataset_writes_png_grid(tmp_path):
    trees.build_voc_tree(tmp_path)
    out = tmp_path / "grid.png"
    browse = load_script("browse_dataset")
    assert browse.main(["dataset=voc", f"paths.data_dir={tmp_path}", "num=2", f"out={out}",
                        "dataset.crop_size=[24,32]"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_colorize_draws_palette_and_ignore():
    from segsuite.utils.visualize import colorize

    palette = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    picture = colorize(np.array([[0, 1, 255]]), palette, 255)
    assert picture.tolist() == [[[1, 2, 3], [4, 5, 6], [255, 255, 255]]]


def test_prepare_voc_aug_missing_sbd(tmp_path, capsys):
    voc = trees.build_voc_tree(tmp_path)
    prepare = load_script("prepare_voc_aug")
    assert prepare.main(["--sbd", str(tmp_path / "nope"), "--voc", str(voc), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "nope/dataset/cls not found" in err and "SBD" in err


def test_prepare_voc_aug_train_aug_rule():
    prepare = load_script("prepare_voc_aug")
    assert prepare.train_aug_ids(["a", "b"], ["c"], ["d", "b"], ["c", "e"]) == ["a", "b", "d"]
