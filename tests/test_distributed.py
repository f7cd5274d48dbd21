"""DDP on CPU (2 gloo processes): exact metrics over uneven shards, one run directory, resume;
and the trainer options that change what a step is (precision, accumulation, clipping)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runs import TINY, assert_resume_equals_uninterrupted, metrics, run_module, train, val_rows
from segsuite.checkpoint import build_net, load_checkpoint

ODD_VAL = "dataset.val.num_images=5"  # 2 processes: shards of 3 and 2 images


def _scores(values: dict) -> dict[str, float]:
    return {k: v for k, v in values.items() if isinstance(v, float)}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _expected_val_scores(ckpt_path: Path) -> dict[str, float]:
    """mIoU and pixel accuracy of the checkpoint on its val split, computed here image by image."""
    ckpt = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(ckpt["segsuite"]["config"])
    dataset = instantiate(cfg.dataset.val, transform=instantiate(cfg.augmentation.val))
    net = build_net(ckpt).eval()
    num_classes = cfg.dataset.num_classes
    confmat = np.zeros((num_classes, num_classes), dtype=np.int64)
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            pred = net(item["image"][None]).argmax(1)[0].numpy().ravel()
            gt = item["mask"].numpy().ravel()
            keep = gt != 255
            counts = np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2)
            confmat += counts.reshape(num_classes, num_classes)
    tp = np.diag(confmat)
    union = confmat.sum(0) + confmat.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return {"val/mIoU": float(iou.mean()), "val/aAcc": float(tp.sum() / confmat.sum()), "images": len(dataset)}


def test_ddp_training_and_validation_of_a_checkpoint_equal_single_process(tmp_path):
    # Train with 2 processes: one run directory, world size 2 recorded, rank 1 writes only its log.
    run = tmp_path / "ddp_train"
    train(run, "trainer=ddp_cpu", "trainer.max_epochs=1", "test=false", ODD_VAL, "trainer.precision=32-true")
    facts = json.loads((run / "run_facts.json").read_text())
    assert facts["world_size"] == 2 and facts["global_batch_size"] == 4
    assert (run / "train_ddp_process_1.log").is_file()          # rank 1 ran in this directory
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(val_rows(run)) == 1
    ckpt = run / "checkpoints" / "best.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 4  # 16 images / global batch 4

    # Validate the checkpoint with 1 and with 2 processes (5 images: uneven shards 3 + 2).
    common = [f"ckpt_path={ckpt}", "num_workers=0", "trainer.enable_progress_bar=false", "trainer.precision=32-true"]
    single, ddp = tmp_path / "eval_single", tmp_path / "eval_ddp"
    run_module("evaluate", [*common, "trainer=cpu", f"hydra.run.dir={single}"], cwd=tmp_path)  # both on the CPU
    run_module("evaluate", [*common, "trainer=ddp_cpu", f"hydra.run.dir={ddp}"], cwd=tmp_path)
    assert (ddp / "evaluate_ddp_process_1.log").is_file() or (ddp / "train_ddp_process_1.log").is_file()
    one, two = _scores(metrics(single)), _scores(metrics(ddp))
    assert one.keys() == two.keys() and "val/mIoU" in one and "val/IoU/background" in one
    assert all(_same(one[k], two[k]) for k in one), {k: (one[k], two[k]) for k in one if not _same(one[k], two[k])}

    # The per-class table and the confusion matrix behind it cover both shards, not rank 0's alone.
    per_class = [(d / "per_class.csv").read_text() for d in (single, ddp)]
    assert per_class[0] == per_class[1]

    # ... and both equal the metrics computed here, image by image, from the checkpoint.
    expected = _expected_val_scores(ckpt)
    assert expected["images"] == 5
    assert one["val/mIoU"] == pytest.approx(expected["val/mIoU"], abs=1e-9)
    assert one["val/aAcc"] == pytest.approx(expected["val/aAcc"], abs=1e-9)


@pytest.mark.slow  # the fast suite checks accumulation through test_loggers' TensorBoard run
def test_precision_accumulation_and_clipping_change_the_step_and_are_recorded(tmp_path):
    run = tmp_path / "acc"
    train(run, "trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5",
          "test=false")
    facts = json.loads((run / "run_facts.json").read_text())
    assert facts["global_batch_size"] == 8 and facts["world_size"] == 1     # 4 per batch x 2 accumulated
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * (16 // 8)                               # 2 epochs of 16 images
    info = ckpt["segsuite"]["run_facts"]
    assert info["precision"] == "bf16-mixed" and info["per_device_batch_size"] == 4
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.trainer.gradient_clip_val == 0.5 and saved.trainer.accumulate_grad_batches == 2


@pytest.mark.slow
def test_ddp_run_resumes_from_its_last_checkpoint_like_an_uninterrupted_one(tmp_path):
    full, _ = assert_resume_equals_uninterrupted(
        tmp_path, ["trainer=ddp_cpu", "trainer.deterministic=true", "trainer.max_epochs=2", "test=false",
                   "trainer.precision=32-true"])
    # 16 images, global batch 4 over 2 processes: 4 steps per epoch
    assert torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 16 // 4


@pytest.mark.slow
def test_multirun_of_ddp_jobs_runs_each_job_once_in_its_own_directory(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "trainer=ddp_cpu", "trainer.max_epochs=1", "test=false",
            "loss=ce,dice", f"hydra.sweep.dir={sweep}"]
    run_module("train", args, cwd=tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    for job, loss in zip(jobs, ("CrossEntropyLoss", "DiceLoss")):
        assert json.loads((job / "run_facts.json").read_text())["world_size"] == 2
        assert (job / "train_ddp_process_1.log").is_file()
        assert OmegaConf.load(job / "config.yaml").loss._target_.endswith(loss)
        assert "val/mIoU" in metrics(job)
    assert not any(sweep.rglob("FAILED"))


@pytest.mark.slow
def test_bf16_mixed_trains_on_cpu_into_the_fp32_band(tmp_path):
    setting = ["dataset.image_size=[64,64]", "dataset.crop_size=[64,64]", "dataset.train.num_images=256",
               "dataset.val.num_images=32", "data.batch_size=16", "data.num_workers=0", "trainer.max_epochs=4",
               "test=false", "print_config=false", "trainer.enable_progress_bar=false"]
    scores = {}
    for precision in ("32-true", "bf16-mixed"):
        run = tmp_path / precision
        train(run, *setting, "trainer=cpu", f"trainer.precision={precision}", tiny=False)
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        facts = ckpt["segsuite"]["run_facts"]
        assert facts["precision"] == precision
        scores[precision] = metrics(run)["val/mIoU_best"]
    assert scores["32-true"] > 0.5                                   # it learned something
    assert abs(scores["bf16-mixed"] - scores["32-true"]) <= 0.05, scores


@pytest.mark.slow
def test_ddp_run_names_the_bad_samples_each_process_found(tmp_path):
    """data.verify=off: the bad files are found in use, each by the one process that reads it (the val
    split's second image is in process 1's shard); the run's records name them all."""
    from support import dataset_trees as trees

    root = trees.build_camvid_tree(tmp_path / "data")
    bad = [root / "trainannot" / f"{trees.CAMVID_SPLITS['train'][1]}.png",
           root / "valannot" / f"{trees.CAMVID_SPLITS['val'][1]}.png"]
    for path in bad:
        trees.write_image(path, trees.random_image("colour"))   # a colour PNG where a grey label belongs
    run = tmp_path / "run"
    proc = train(run, "trainer=ddp_cpu", "trainer.precision=32-true", "dataset=camvid", f"dataset.root={root}",
                 "dataset.crop_size=[12,16]", "model=unet", "model.base_channels=4", "model.depth=2",
                 "data.batch_size=2", "data.num_workers=1", "data.verify=off", "data.skip_bad=true",
                 "trainer.max_epochs=1", "test=false", "print_config=false", "trainer.enable_progress_bar=false",
                 tiny=False)
    facts = json.loads((run / "run_facts.json").read_text())["skipped_bad_samples"]
    assert {split: entry["count"] for split, entry in facts.items()} == {"train": 1, "val": 1}
    for path, split in zip(bad, ("train", "val")):
        assert str(path) in facts[split]["samples"][0] and str(path) in proc.stdout


@pytest.mark.slow
def test_sigterm_to_rank_zero_of_a_ddp_run_stops_every_rank_at_the_same_step(tmp_path):
    """Preemption signals the main process only: the other rank learns of it before the next step (no hang),
    both stop there, and the run keeps interrupted.ckpt, FAILED and exit 143."""
    run = tmp_path / "run"
    drill = ["+callbacks.drill._target_=segsuite.callbacks.FailAtStep", "+callbacks.drill.step=5",
             "+callbacks.drill.kind=SIGTERM", "+callbacks.drill.where=backward"]
    proc = train(run, "trainer=ddp_cpu", "trainer.precision=32-true", "trainer.max_epochs=3", "test=false", *drill,
                 check=False)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "interrupted.ckpt", weights_only=True)["global_step"] == 6
    assert (run / "FAILED").is_file() and "error: stopped by SIGTERM" in proc.stderr
