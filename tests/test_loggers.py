"""What W&B (offline) and TensorBoard receive: config, tags, metrics, learning rate, mask overlays,
per-class IoU table, confusion matrix, and coloured image grids; plus the drawing helpers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import wandb_records
from runs import metrics, train
from segsuite.utils.visualize import IGNORE_COLOUR, colorize, denormalise, image_grid


def _val_split(run_dir: Path):
    """The run's validation dataset (normalised) and palette, rebuilt here from its saved config."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    dataset = instantiate(cfg.dataset.val, transform=instantiate(cfg.augmentation.val))
    return dataset, np.asarray(dataset.palette, dtype=np.uint8), cfg


def _table(run_dir: Path, ref: dict) -> dict:
    return json.loads((run_dir / "files" / ref["path"]).read_text())


def test_wandb_offline_run_holds_config_metrics_masks_iou_table_and_confusion_matrix(tmp_path):
    run = tmp_path / "wb"
    train(run, "logger=wandb", "test=false", "tags=[unit,wandb]")
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    rows = wandb_records.history(wandb_run)
    config = wandb_records.config(wandb_run)
    dataset, _, cfg = _val_split(run)
    names = list(dataset.classes)

    # resolved config, run facts and tags
    assert config["model"]["_target_"] == cfg.model._target_ and config["run"]["world_size"] == 1
    assert list(wandb_records.run_record(wandb_run).tags) == ["unit", "wandb"]
    # metrics and learning rate
    val_rows = [r for r in rows if "val/mIoU" in r]
    assert len(val_rows) == 2
    assert val_rows[-1]["val/mIoU"] == pytest.approx(metrics(run)["val/mIoU"])
    assert any(k.startswith("lr-") for r in rows for k in r)

    # mask overlays: the same 4 images every epoch, ground truth = the dataset's masks
    media = [r["val/examples"] for r in rows if "val/examples" in r]
    assert len(media) == 2 and media[0]["captions"] == media[1]["captions"]
    assert media[0]["count"] == 4 == len(set(media[0]["captions"]))
    labels = config["_wandb"]["mask/class_labels"]
    for kind in ("prediction", "ground_truth"):
        assert labels[f"val/examples_wandb_delimeter_{kind}"]["value"] == {
            **{str(i): n for i, n in enumerate(names)}, "255": "ignore"}
    by_name = {dataset[i]["name"]: i for i in range(len(dataset))}
    for caption, masks in zip(media[-1]["captions"], media[-1]["all_masks"]):
        gt_png = np.array(Image.open(wandb_run / "files" / masks["ground_truth"]["path"]))
        assert np.array_equal(gt_png, dataset[by_name[caption]]["mask"].numpy())
        pred_png = np.array(Image.open(wandb_run / "files" / masks["prediction"]["path"]))
        assert pred_png.shape == gt_png.shape and pred_png.max() < len(names)

    # confusion matrix: every non-ignored val pixel counted once; IoU table follows from it
    last_cm = [r for r in rows if "val/confusion_matrix_table" in r][-1]["val/confusion_matrix_table"]
    cm_rows = _table(wandb_run, last_cm)["data"]
    confmat = np.zeros((len(names), len(names)), dtype=np.int64)
    for actual, predicted, count in cm_rows:
        confmat[names.index(actual), names.index(predicted)] = count
    counted = sum(int((dataset[i]["mask"] != 255).sum()) for i in range(len(dataset)))
    assert confmat.sum() == counted
    tp = np.diag(confmat)
    union = confmat.sum(0) + confmat.sum(1) - tp
    iou_table = _table(wandb_run, [r for r in rows if "val/iou_table" in r][-1]["val/iou_table"])
    assert iou_table["columns"][:2] == ["class", "IoU"]
    for (name, iou, *_), c in zip(iou_table["data"], range(len(names))):
        assert name == names[c]
        if union[c]:
            assert iou == pytest.approx(tp[c] / union[c], abs=1e-6)
            assert metrics(run)[f"val/IoU/{name}"] == pytest.approx(tp[c] / union[c], abs=1e-6)
    assert [r for r in rows if "val/confusion_heatmap" in r][-1]["val/confusion_heatmap"]["_type"] == "image-file"


def test_tensorboard_gets_the_images_as_a_coloured_grid_and_total_batch_counts_accumulation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    train(run, "logger=tensorboard", "trainer.max_epochs=1", "test=false", "callbacks.val_images.num_images=3",
          "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5")
    assert json.loads((run / "run_facts.json").read_text())["global_batch_size"] == 8   # 4 x 2 accumulated
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    (grid_event,) = events.Images("val/examples")
    assert grid_event.step == 16 // (4 * 2)                               # optimizer steps after one epoch
    grid = np.array(Image.open(io.BytesIO(grid_event.encoded_image_string)).convert("RGB"))
    size, gap = 32, 2
    assert grid.shape == (3 * size + 2 * gap, 3 * size + 2 * gap, 3)   # 3 rows: image | truth | prediction
    dataset, palette, cfg = _val_split(run)
    first = dataset[0]  # the first image shown is the first of the split
    truth_panel = grid[:size, size + gap:2 * size + gap]
    mask = first["mask"].numpy()
    coloured = palette[np.minimum(mask, len(palette) - 1)]
    expected = np.where((mask == 255)[..., None], np.array(IGNORE_COLOUR, np.uint8), coloured)
    assert np.array_equal(truth_panel, expected)
    raw = instantiate(cfg.dataset.val, transform=None)[0]["image"]   # uint8 original
    assert np.abs(grid[:size, :size].astype(int) - raw.astype(int)).max() <= 1
    assert "val/confusion_matrix" in events.Tags()["images"]             # add_figure stores an image
    assert "val/iou_table/text_summary" in events.Tags()["tensors"]


def test_drawing_helpers_invert_normalisation_colour_masks_and_tile_panels():
    pixels = torch.tensor([[[0, 255]], [[51, 102]], [[128, 64]]], dtype=torch.float32)  # [3,1,2]
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    normalised = (pixels / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert np.array_equal(denormalise(normalised, mean, std), pixels.permute(1, 2, 0).numpy().astype(np.uint8))

    palette = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    coloured = colorize(np.array([[0, 1], [255, 1]]), palette, ignore_index=255)
    assert coloured[0, 0].tolist() == [10, 20, 30] and coloured[0, 1].tolist() == [40, 50, 60]
    assert tuple(coloured[1, 0]) == IGNORE_COLOUR

    a, b = np.full((2, 3, 3), 7, np.uint8), np.full((4, 1, 3), 9, np.uint8)
    grid = image_grid([[a, b], [b]], gap=1)
    assert grid.shape == (4 + 1 + 4, 3 + 1 + 3, 3)           # panels padded to 4x3, one pixel gaps
    assert (grid[:2, :3] == 7).all() and (grid[:4, 4:5] == 9).all() and (grid[5:9, :1] == 9).all()
    assert (grid[4] == 0).all()                                # the gap row is black
