"""The BF (boundary F1) score against a plain numpy/scipy count written here, hand-worked cases, its
edge cases (void, a class in one map only, regions at the image border, undefined classes), and
DDP: gathered per-image counts give the single-process score bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from segsuite.metrics import (
    BoundaryF1,
    bf_scores,
    boundary_counts,
    boundary_threshold,
    dilate_by_disk,
    disk_rectangles,
)

VOID = 255


# -- the independent count: one image and one class at a time, scipy's exact Euclidean distance transform
def _edges(region: np.ndarray) -> np.ndarray:
    """Pixels of `region` with a 4-neighbour outside it; outside the image counts as inside."""
    padded = np.pad(region, 1, constant_values=True)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region & ~inner


def _within(points: np.ndarray, edges: np.ndarray, theta: float) -> int:
    """How many `points` lie within Euclidean distance `theta` of a pixel of `edges`."""
    if not edges.any():
        return 0
    distance = ndimage.distance_transform_edt(~edges)
    return int((distance[points] <= theta).sum())


def reference_bf(preds: np.ndarray, targets: np.ndarray, num_classes: int, tolerance: float = 0.0075):
    """Per-image F (NaN where undefined), per-class BF and mBF, counted pixel by pixel."""
    per_image = np.full((len(preds), num_classes), np.nan)
    for i, (pred, gt) in enumerate(zip(preds, targets)):
        theta = tolerance * math.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2)
        void = (gt < 0) | (gt >= num_classes)
        for c in range(num_classes):
            pred_c, gt_c = (pred == c) & ~void, (gt == c) & ~void
            if not pred_c.any() and not gt_c.any():
                continue
            pred_edge, gt_edge = _edges(pred_c), _edges(gt_c)
            if not pred_edge.any() and not gt_edge.any():
                continue  # undefined: no boundary in either map
            if not pred_edge.any() or not gt_edge.any():
                per_image[i, c] = 0.0
                continue
            precision = _within(pred_edge, gt_edge, theta) / pred_edge.sum()
            recall = _within(gt_edge, pred_edge, theta) / gt_edge.sum()
            per_image[i, c] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    per_class = np.array([np.nan if np.isnan(col).all() else np.nanmean(col) for col in per_image.T])
    return per_image, per_class, float(np.nanmean(per_class))


def _score(preds, targets, num_classes, tolerance=0.0075, chunks=1):
    metric = BoundaryF1(num_classes, tolerance=tolerance)
    for p, t in zip(torch.as_tensor(preds).chunk(chunks), torch.as_tensor(targets).chunk(chunks)):
        metric.update(p, t)
    return metric.compute()


def _blocky(rng, n, num_classes, shape, block):
    """Label maps of random blocks (nearest upsampling), so regions are large and have long boundaries."""
    small = rng.integers(0, num_classes, size=(n, -(-shape[0] // block), -(-shape[1] // block)))
    return np.repeat(np.repeat(small, block, axis=1), block, axis=2)[:, : shape[0], : shape[1]]


def _structured_case(seed=0, n=6, num_classes=5, shape=(37, 53)):
    """Blocky ground truth with void (a band, scattered pixels, one whole border row), predictions that
    are shifted, noisy copies; class 3 only in the prediction of image 0, class 4 only in the ground
    truth of image 1, class 2 a thin region along the image border in image 2."""
    rng = np.random.default_rng(seed)
    gt = _blocky(rng, n, 3, shape, 6)
    pred = np.roll(gt, shift=(2, -3), axis=(1, 2))
    noise = rng.random(pred.shape) < 0.03
    pred[noise] = rng.integers(0, 3, size=noise.sum())
    gt[:, 10:13, :] = VOID
    gt[rng.random(gt.shape) < 0.02] = VOID
    gt[3, -1, :] = VOID
    pred[0, 20:30, 5:15] = 3
    gt[1, 25:33, 30:45] = 4
    gt[2, :, :2] = 2
    pred[2, :, :3] = 2
    return pred, gt, num_classes


def test_the_disk_is_the_set_of_offsets_within_theta():
    for theta in (0.3, 1.0, 1.5, 2.0, 4.5, 5.0, 7.3, 17.2):
        r = math.floor(theta) + 1
        expected = {(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= theta**2}
        covered = {(dy, dx) for h, w in disk_rectangles(theta) for dy in range(-h, h + 1) for dx in range(-w, w + 1)}
        assert covered == expected, theta
    assert boundary_threshold(360, 480) == pytest.approx(4.5)   # 0.75% of the CamVid diagonal
    assert disk_rectangles(4.5) == [(2, 4), (3, 3), (4, 2)]


@pytest.mark.parametrize("theta", [0.5, 1.0, 2.9, 3.0, 4.5, 6.1])
def test_dilation_equals_a_distance_transform_threshold(theta):
    masks = torch.rand(4, 31, 45, generator=torch.Generator().manual_seed(1)) > 0.99
    masks[0] = False
    masks[1, 0, 0] = masks[1, -1, -1] = True     # pixels in the corners
    got = dilate_by_disk(masks, theta).numpy()
    for mask, dilated in zip(masks.numpy(), got):
        distance = ndimage.distance_transform_edt(~mask) if mask.any() else np.full(mask.shape, np.inf)
        assert np.array_equal(dilated, distance <= theta)


def test_hand_worked_vertical_edge():
    # 10x10, ground truth: columns 0-4 class 0, 5-9 class 1; the prediction moves the edge 3 columns right.
    gt = np.zeros((1, 10, 10), dtype=np.int64)
    gt[:, :, 5:] = 1
    pred = np.zeros_like(gt)
    pred[:, :, 8:] = 1
    counts = boundary_counts(torch.as_tensor(pred), torch.as_tensor(gt), 2, tolerance=2.5 / math.hypot(10, 10))
    # boundaries: gt class 0 column 4, class 1 column 5; prediction class 0 column 7, class 1 column 8
    assert counts[0].tolist() == [[0, 10, 0, 10], [0, 10, 0, 10]]   # 3 columns apart: none within 2.5
    near = _score(pred, gt, 2, tolerance=3.2 / math.hypot(10, 10))
    far = _score(pred, gt, 2, tolerance=2.5 / math.hypot(10, 10))
    assert near["bf_per_class"].tolist() == [1.0, 1.0] and near["mbf"] == 1.0
    assert far["bf_per_class"].tolist() == [0.0, 0.0] and far["mbf"] == 0.0
    # one more predicted row of class 1 (column 7, rows 0-4): its 5 new boundary pixels are 2 from column 5
    pred[0, :5, 7] = 1
    _, per_class, mbf = reference_bf(pred, gt, 2, tolerance=2.5 / math.hypot(10, 10))
    got = _score(pred, gt, 2, tolerance=2.5 / math.hypot(10, 10))
    assert got["bf_per_class"].double().numpy() == pytest.approx(per_class.astype(np.float32), abs=1e-7)
    assert got["mbf"] == pytest.approx(mbf, abs=1e-12) and 0 < mbf < 1


def test_the_image_border_is_no_boundary_and_a_class_filling_the_image_is_undefined():
    gt = np.zeros((3, 8, 8), dtype=np.int64)
    pred = np.zeros_like(gt)
    # image 0: class 0 fills the image in both maps -> no boundary anywhere: undefined, not 1, not 0
    # image 1: class 0 fills the ground truth, the prediction has none (class 1 everywhere): undefined too
    pred[1] = 1
    # image 2: class 1 is a 3-column band at the right border, predicted exactly: F = 1 for both classes
    gt[2, :, 5:] = pred[2, :, 5:] = 1
    counts = boundary_counts(torch.as_tensor(pred), torch.as_tensor(gt), 2)
    assert counts[0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]
    assert counts[1].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]
    assert counts[2].tolist() == [[8, 8, 8, 8], [8, 8, 8, 8]]     # one column each side of the edge only
    got = _score(pred, gt, 2)
    assert got["bf_per_class"].tolist() == [1.0, 1.0]               # the undefined images are left out
    assert got["images_per_class"].tolist() == [1, 1]
    none = _score(pred[:2], gt[:2], 2)
    assert math.isnan(none["mbf"]) and torch.isnan(none["bf_per_class"]).all()


def test_void_belongs_to_no_class_in_either_map():
    gt = np.zeros((1, 12, 12), dtype=np.int64)
    gt[0, 4:8, 4:8] = VOID
    pred = np.zeros_like(gt)
    pred[0, 4:8, 4:8] = 1           # whatever is predicted on void pixels counts for no class
    counts = boundary_counts(torch.as_tensor(pred), torch.as_tensor(gt), 2)
    assert counts[0, 0].tolist() == [16, 16, 16, 16]                 # class 0 has a boundary around the void
    assert counts[0, 1].tolist() == [0, 0, 0, 0]                     # class 1 only on void: absent
    got = _score(pred, gt, 2)
    assert got["bf_per_class"][0] == 1.0 and math.isnan(got["bf_per_class"][1]) and got["mbf"] == 1.0


def test_a_class_in_one_map_only_scores_zero():
    gt = np.zeros((2, 16, 16), dtype=np.int64)
    pred = np.zeros_like(gt)
    pred[0, 3:7, 3:7] = 1            # image 0: class 1 only predicted
    gt[1, 9:14, 2:6] = 1             # image 1: class 1 only in the ground truth
    got = _score(pred, gt, 2)
    per_image, _, mbf = reference_bf(pred, gt, 2)
    assert per_image[:, 1].tolist() == [0.0, 0.0]
    assert got["bf_per_class"][1] == 0.0 and got["images_per_class"].tolist() == [2, 2]
    assert got["mbf"] == pytest.approx(mbf, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structured_maps_equal_the_independent_count(seed):
    pred, gt, num_classes = _structured_case(seed)
    per_image, per_class, mbf = reference_bf(pred, gt, num_classes)
    assert not np.isnan(per_image[0, 3]) and not np.isnan(per_image[1, 4])    # the one-map classes count
    counts = boundary_counts(torch.as_tensor(pred), torch.as_tensor(gt), num_classes)
    assert np.allclose(bf_scores(counts).numpy(), per_image, equal_nan=True, rtol=0, atol=1e-12)
    got = _score(pred, gt, num_classes, chunks=4)
    assert np.allclose(got["bf_per_class"].double().numpy(), per_class, equal_nan=True, rtol=0, atol=1e-7)
    assert got["mbf"] == pytest.approx(mbf, rel=0, abs=1e-12)


def test_random_maps_at_camvid_size_equal_the_independent_count():
    # θ = 4.5 px at 360x480; random blocks, ~2% void, a shifted and partly wrong prediction
    rng = np.random.default_rng(7)
    gt = _blocky(rng, 2, 11, (360, 480), 24)
    pred = np.roll(gt, shift=(3, 4), axis=(1, 2))
    pred[:, 100:140, 200:300] = 10
    gt[rng.random(gt.shape) < 0.02] = VOID
    _, per_class, mbf = reference_bf(pred, gt, 11)
    got = _score(pred, gt, 11)
    assert np.allclose(got["bf_per_class"].double().numpy(), per_class, equal_nan=True, rtol=0, atol=1e-7)
    assert got["mbf"] == pytest.approx(mbf, rel=0, abs=1e-12) and 0.1 < mbf < 0.99


def test_scores_equal_labels_and_image_order_changes_nothing():
    pred, gt, num_classes = _structured_case(3)
    scores = torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(0, 3, 1, 2).float()
    a, b = BoundaryF1(num_classes), BoundaryF1(num_classes)
    a.update(scores, torch.as_tensor(gt))
    order = [5, 2, 0, 4, 1, 3]
    for i in order:
        b.update(torch.as_tensor(pred[i : i + 1]), torch.as_tensor(gt[i : i + 1]))
    x, y = a.compute(), b.compute()
    assert x["mbf"] == y["mbf"] and torch.equal(x["bf_per_class"], y["bf_per_class"])  # bit for bit
    a.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):   # torchmetrics' warning: nothing scored
        assert math.isnan(a.compute()["mbf"])
    with pytest.raises(ValueError, match="does not match"):
        a.update(torch.as_tensor(pred[:, :5]), torch.as_tensor(gt))


SHARDINGS = {"even": [[0, 1, 2], [3, 4, 5]], "uneven": [[4, 0], [1, 5, 3, 2]],
             "one_rank_empty": [[0, 1, 2, 3, 4, 5], []]}


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    pred, gt, num_classes = _structured_case(4)
    metric = BoundaryF1(num_classes)
    for name, shards in SHARDINGS.items():
        for i in shards[rank]:
            metric.update(torch.as_tensor(pred[i : i + 1]), torch.as_tensor(gt[i : i + 1]))
        result = metric.compute()
        metric.reset()
        if rank == 0:
            queue.put((name, result["mbf"], result["bf_per_class"].numpy(), result["images_per_class"].tolist()))
    dist.destroy_process_group()


def test_ddp_gathers_per_image_counts_exactly():
    # 2 gloo processes score 6 images split evenly, unevenly and all on one rank: the single-process score, bit for bit
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in SHARDINGS]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    pred, gt, num_classes = _structured_case(4)
    single = _score(pred, gt, num_classes)
    assert [r[0] for r in results] == list(SHARDINGS)
    for name, mbf, per_class, images in results:
        assert mbf == single["mbf"], name
        assert np.array_equal(per_class, single["bf_per_class"].numpy(), equal_nan=True), name
        assert images == single["images_per_class"].tolist(), name


# -- end to end: training's test step and segsuite.evaluate, one process and DDP ----------------------------
SIZE = ["dataset.image_size=[96,128]", "dataset.crop_size=[96,128]"]   # θ = 1.2 px: boundaries need not coincide
EVAL = ["num_workers=0", "trainer.enable_progress_bar=false", "trainer.precision=32-true", "metrics.boundary=true"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from runs import train

    run = tmp_path_factory.mktemp("bf") / "run"
    train(run, *SIZE, "trainer.max_epochs=1", "trainer.precision=32-true", "metrics.boundary=true")
    return run


def _expected_on_val(ckpt_path):
    """Per-class BF and mBF of the checkpoint on its val split, counted here image by image."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from segsuite.checkpoint import build_net, load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(ckpt["segsuite"]["config"])
    dataset = instantiate(cfg.dataset.val, transform=instantiate(cfg.augmentation.val))
    net = build_net(ckpt).eval()
    preds, gts = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            preds.append(net(item["image"][None]).argmax(1)[0].numpy())
            gts.append(item["mask"].numpy())
    return reference_bf(np.stack(preds), np.stack(gts), cfg.dataset.num_classes)


def _bf_values(summary: dict, split: str) -> dict:
    return {k: v for k, v in summary.items() if k == f"{split}/mBF" or k.startswith(f"{split}/BF/")}


@pytest.mark.slow  # a training run and an evaluate subprocess, ~17 s
def test_training_logs_bf_and_evaluate_prints_bf_equal_to_the_independent_count(trained, tmp_path):
    import csv
    import json

    from runs import metrics, run_module

    logged = metrics(trained)
    assert "test/mBF" in logged and "val/mBF" in logged and "test/BF/background" in logged
    ckpt = trained / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval"
    proc = run_module("evaluate", [f"ckpt_path={ckpt}", f"hydra.run.dir={out}", "trainer=cpu", *EVAL], cwd=tmp_path)
    header = next(line for line in proc.stdout.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "IoU", "Acc", "BF"] and "mBF" in proc.stdout
    _, per_class, mbf = _expected_on_val(ckpt)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["val/mBF"] == pytest.approx(mbf, rel=0, abs=1e-12) and 0 < mbf < 1
    with open(out / "per_class.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row, expected in zip(rows, per_class):
        got = summary[f"val/BF/{row['class']}"]
        assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected, abs=1e-6)
        assert float(row["bf"]) == pytest.approx(got, nan_ok=True)
    # without metrics.boundary nothing changes: no BF anywhere
    plain = tmp_path / "plain"
    proc = run_module("evaluate", [f"ckpt_path={ckpt}", f"hydra.run.dir={plain}", "trainer=cpu", *EVAL[:-1]],
                      cwd=tmp_path)
    assert "mBF" not in proc.stdout and not _bf_values(json.loads((plain / "metrics.json").read_text()), "val")


@pytest.mark.slow
def test_ddp_evaluation_gives_the_single_process_bf(trained, tmp_path):
    import json

    from runs import run_module

    ckpt = trained / "checkpoints" / "best.ckpt"
    scores = {}
    for trainer in ("cpu", "ddp_cpu"):        # 5 val images: shards of 3 and 2 under DDP
        out = tmp_path / trainer
        run_module("evaluate", [f"ckpt_path={ckpt}", f"hydra.run.dir={out}", f"trainer={trainer}", "split=test",
                                *EVAL], cwd=tmp_path)
        scores[trainer] = _bf_values(json.loads((out / "metrics.json").read_text()), "test")
    one, two = scores["cpu"], scores["ddp_cpu"]
    assert any((tmp_path / "ddp_cpu" / f"{task}_ddp_process_1.log").is_file() for task in ("evaluate", "train"))
    assert 0 < one["test/mBF"] < 1 and one.keys() == two.keys()
    assert all(one[k] == two[k] or (math.isnan(one[k]) and math.isnan(two[k])) for k in one), (one, two)
