"""End-to-end: `segsuite.evaluate` with TTA and saved predictions, `segsuite.predict` from a checkpoint alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from runs import run_module, train
from segsuite.checkpoint import build_net, load_checkpoint
from segsuite.data.datasets import SyntheticShapes
from segsuite.data.datasets.base import DatasetError
from segsuite.evaluate import evaluate
from segsuite.evaluation import EvalRecorder
from segsuite.predict import predict
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers
from support import dataset_trees as trees

EVAL = ["num_workers=0", "trainer.enable_progress_bar=false"]


def in_process(name: str, out: Path, *overrides: str):
    """The `name` config composed with `overrides`, writing to `out` (for fast checks of bad input)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(name, overrides=[f"paths.output_dir={out}", *overrides])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train(run, "test=false")
    return run


def best_score(ckpt_path: Path) -> float:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return float(next(v["best_model_score"] for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k))


def ious_from_saved_predictions(pred_dir: Path, num_classes: int) -> np.ndarray:
    """Per-class IoU of the saved palette PNGs against the synthetic val masks, computed here with numpy."""
    dataset = SyntheticShapes(split="val", num_images=5, image_size=[32, 32], num_classes=6, seed=0)
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for i in range(len(dataset)):
        item = dataset[i]
        pred = np.asarray(Image.open(pred_dir / f"{item['name']}.png"))
        gt = np.asarray(item["mask"])
        valid = gt != 255
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


@pytest.mark.parametrize("tta", ["slide", pytest.param("multiscale", marks=pytest.mark.slow)])
def test_evaluate_writes_reports_that_agree_with_its_saved_predictions(run_dir, tmp_path, tta):
    best = run_dir / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval"
    extra = ["tta.crop_size=[16,24]", "tta.stride=[8,8]"] if tta == "slide" else ["tta.scales=[0.75,1.0]"]
    proc = run_module("evaluate", [f"ckpt_path={best}", f"hydra.run.dir={out}", f"tta={tta}", *extra,
                                   "save_predictions=true", *EVAL], cwd=tmp_path)
    assert "IoU" in proc.stdout and "mIoU" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    ious = ious_from_saved_predictions(out / "predictions" / "palette", 6)
    assert metrics["val/mIoU"] == pytest.approx(float(np.nanmean(ious)), abs=1e-6)
    with open(out / "per_class.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert next(r["class"] for r in rows) == "background" and len(rows) == 6
    for row, iou in zip(rows, ious):
        assert (np.isnan(iou) and row["iou"] == "nan") or float(row["iou"]) == pytest.approx(iou, abs=1e-6)
        assert metrics[f"val/IoU/{row['class']}"] == pytest.approx(float(row["iou"]), nan_ok=True)
    png = Image.open(out / "confusion_matrix.png")
    assert png.width > 200 and png.height > 200


def test_evaluate_with_whole_window_slide_reproduces_training_validation(run_dir, tmp_path):
    best = run_dir / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval"
    run_module("evaluate", [f"ckpt_path={best}", f"hydra.run.dir={out}", "tta=slide", "tta.crop_size=[32,32]",
                            "tta.stride=[32,32]", *EVAL], cwd=tmp_path)
    assert json.loads((out / "metrics.json").read_text())["val/mIoU"] == pytest.approx(best_score(best), abs=1e-4)
    with pytest.raises(FileExistsError, match="overwrite=true"):
        evaluate(in_process("evaluate", out, f"ckpt_path={best}", *EVAL))


def test_evaluate_rejects_a_dataset_with_another_class_count(run_dir, tmp_path):
    cfg = in_process("evaluate", tmp_path / "e", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "dataset=camvid")
    with pytest.raises(ValueError, match="UNet with 6 classes") as err:
        evaluate(cfg)
    assert "camvid" in str(err.value) and "11 classes" in str(err.value)


def test_evaluate_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        evaluate(in_process("evaluate", tmp_path / "e", f"ckpt_path={tmp_path / 'nope.ckpt'}"))


class _Module:
    def __init__(self, logits):
        self.last_eval_preds = logits.argmax(dim=1)


def test_cityscapes_predictions_are_written_as_official_label_ids(tmp_path):
    # trainIds 0 (road), 13 (car), 18 (bicycle) are labelIds 7, 26, 33 in cityscapesScripts.
    pred = torch.tensor([[0, 13], [18, 0]])
    logits = torch.nn.functional.one_hot(pred, 19).permute(2, 0, 1).float().unsqueeze(0)
    recorder = EvalRecorder(tmp_path / "palette", palette=[[i, i, i] for i in range(19)],
                            cityscapes_dir=tmp_path / "ids")
    batch = {"mask": torch.tensor([[[0, 13], [255, 1]]]), "name": ["frankfurt_000000_000294"]}
    recorder.on_validation_batch_end(None, _Module(logits), None, batch, 0)
    ids = np.asarray(Image.open(tmp_path / "ids" / "frankfurt_000000_000294_leftImg8bit.png"))
    assert ids.tolist() == [[7, 26], [33, 7]]
    assert np.asarray(Image.open(tmp_path / "palette" / "frankfurt_000000_000294.png")).tolist() == [[0, 13], [18, 0]]


def _write_inputs(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"a.png": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              "b.png": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              "c.png": rng.integers(0, 256, (21, 45, 3), dtype=np.uint8),
              "d.jpg": rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)}
    folder.mkdir()
    for name, array in arrays.items():
        Image.fromarray(array).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return arrays


def test_predict_a_folder_from_the_checkpoint_alone(run_dir, tmp_path):
    best = run_dir / "checkpoints" / "best.ckpt"
    work = tmp_path / "empty"  # no dataset, no configs: only the checkpoint and the images
    work.mkdir()
    arrays = _write_inputs(tmp_path / "images")
    proc = run_module("predict", [f"ckpt_path={best}", f"input={tmp_path / 'images'}", "progress_bar=false",
                                  "data.skip_bad=true"], cwd=work)
    text = proc.stdout + proc.stderr
    assert "broken.png" in text and "predicted 4 of 5" in text
    out = next(work.glob("outputs/predict/runs/*/predictions"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}_{kind}.png" for s in "abcd" for kind in ("mask", "overlay"))

    # the masks are the argmax of the network on (rgb/255 - mean)/std, computed here independently
    ckpt = load_checkpoint(best)
    info = ckpt["segsuite"]
    net = build_net(ckpt).eval()
    mean, std = np.array(info["mean"]), np.array(info["std"])
    palette = np.array(info["palette"])
    for name in ("a.png", "b.png", "c.png"):
        image = arrays[name]
        x = torch.from_numpy(((image / 255.0 - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            expected = net(x).argmax(1)[0].numpy()
        mask = np.asarray(Image.open(out / f"{name[0]}_mask.png"))
        assert mask.shape == image.shape[:2]
        assert (mask == expected).mean() > 0.999  # batched vs single-image float rounding may flip a tie
        overlay = np.asarray(Image.open(out / f"{name[0]}_overlay.png")).astype(int)
        assert np.abs(overlay - (0.5 * image + 0.5 * palette[mask])).max() <= 1
    assert np.asarray(Image.open(out / "d_mask.png")).shape == (40, 24)

    # existing outputs are kept unless overwrite=true; a glob input works too
    with pytest.raises(FileExistsError, match="a_mask.png.*overwrite=true"):
        predict(in_process("predict", tmp_path, f"ckpt_path={best}", f"input={tmp_path / 'images'}", f"output={out}"))
    (out / "a_mask.png").write_bytes(b"stale")
    glob_input = f"input='{tmp_path / 'images'}/[ab].png'"  # quoted for Hydra's override grammar
    run_module("predict", [f"ckpt_path={best}", glob_input, f"output={out}", "overwrite=true", "tta=flip",
                           "progress_bar=false"], cwd=work)
    assert np.asarray(Image.open(out / "a_mask.png")).shape == (32, 32)  # replaced by a fresh prediction


def test_predict_names_a_missing_input(run_dir, tmp_path):
    cfg = in_process("predict", tmp_path, f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
                     f"input={tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        predict(cfg)


# -- bad files: checked as training checks them, the same messages, the same data.skip_bad ----------------------
def _folder_dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder-dataset tree with the 6 classes of the `run_dir` model, and the overrides that evaluate on it."""
    root = trees.build_folder_tree(tmp_path / "data")
    (root / "classes.txt").write_text("\n".join(f"class{i}" for i in range(6)) + "\n")
    return root, ["dataset=folder", f"dataset.root={root}", "dataset.num_classes=6"]


@pytest.mark.parametrize("found", ["by the check", "in use"])
def test_evaluate_checks_its_split_as_training_does(run_dir, tmp_path, found):
    root, dataset = _folder_dataset(tmp_path)
    bad = root / "images" / "val" / "val_001.jpg"
    bad.write_bytes(bad.read_bytes()[:-40])   # truncated
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}"
    with pytest.raises(DatasetError) as err:
        evaluate(in_process("evaluate", tmp_path / "e1", ckpt, *dataset, *EVAL))
    message = str(err.value)
    assert str(bad) in message and "val samples failed the check before evaluating" in message
    assert "data.skip_bad=true" in message
    # left out and named; "in use": not checked first, found by a worker, its batch of one skipped
    extra = ["data.verify=off", "num_workers=1", "batch_size=1"] if found == "in use" else []
    evaluate(in_process("evaluate", tmp_path / "e2", ckpt, *dataset, *EVAL, *extra, "data.skip_bad=true"))
    skipped = json.loads((tmp_path / "e2" / "metrics.json").read_text())["skipped_bad_samples"]
    assert skipped["val"]["count"] == 1 and str(bad) in skipped["val"]["samples"][0]


def test_predict_checks_its_inputs_as_training_does(run_dir, tmp_path):
    _write_inputs(tmp_path / "images")
    loop = tmp_path / "images" / "loop.png"
    loop.symlink_to(loop.name)   # ln -s loop.png loop.png
    args = [f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"input={tmp_path / 'images'}", "progress_bar=false"]
    with pytest.raises(DatasetError) as err:
        predict(in_process("predict", tmp_path / "p1", *args))
    message = str(err.value)
    assert "2 of 6 input samples failed the check before predicting" in message and "data.skip_bad=true" in message
    assert str(tmp_path / "images" / "broken.png") in message and f"{loop}: " in message and "link loop" in message
    assert not (tmp_path / "p1").exists()   # stopped before anything was written
    result = predict(in_process("predict", tmp_path / "p2", *args, "data.skip_bad=true"))
    assert sorted(result["skipped"]) == [str(tmp_path / "images" / "broken.png"), str(loop)]
    assert len(result["written"]) == 4

