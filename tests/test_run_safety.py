"""Runs a user can trust: bad data fails before step 0, crashes keep a resumable checkpoint, errors are short."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import numpy as np
import pytest
import torch

from runs import TINY, run_module, train, val_rows
from segsuite.data.datamodule import SegDataModule
from segsuite.data.datasets.base import DatasetError
from segsuite.testing import dataset_trees as trees
from segsuite.testing.dataset_trees import compose

FIX = "data.skip_bad=true"


def camvid_datamodule(tmp_path, verify="full", skip_bad=False, name="camvid", build=trees.build_camvid_tree):
    root = build(tmp_path / "data")
    cfg = compose(name, tmp_path / "data", [f"dataset.root={root}"])
    return SegDataModule(cfg.dataset, cfg.augmentation, batch_size=2, num_workers=0, verify=verify,
                         skip_bad=skip_bad, cache_dir=str(tmp_path / "cache")), root


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damage_camvid(kind: str, root):
    """Damage one file of a CamVid fixture tree; return (split, the file the message must name)."""
    if kind == "truncated train image (last in the epoch order)":
        path = root / "train" / f"{trees.CAMVID_SPLITS['train'][-1]}.png"
        truncate(path)
        return "train", path
    if kind == "unreadable val image":
        path = root / "val" / f"{trees.CAMVID_SPLITS['val'][0]}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 50 + b"IEND\xaeB`\x82")
        return "val", path
    if kind == "mask of the wrong size":
        path = root / "testannot" / f"{trees.CAMVID_SPLITS['test'][1]}.png"
        trees.write_grey_png(path, np.zeros((trees.SIZE[0] + 2, trees.SIZE[1]), np.uint8))
        return "test", path
    if kind == "colour PNG where a grey label belongs":
        path = root / "trainannot" / f"{trees.CAMVID_SPLITS['train'][1]}.png"
        trees.write_image(path, trees.random_image("colour"))
        return "train", path
    if kind == "label value CamVid cannot hold":
        path = root / "valannot" / f"{trees.CAMVID_SPLITS['val'][1]}.png"
        trees.write_grey_png(path, np.full(trees.SIZE, 40, np.uint8))
        return "val", path
    raise ValueError(kind)


DAMAGE = ["truncated train image (last in the epoch order)", "unreadable val image", "mask of the wrong size",
          "colour PNG where a grey label belongs", "label value CamVid cannot hold"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_file_stops_the_check_naming_the_file_and_the_fix(tmp_path, kind):
    dm, root = camvid_datamodule(tmp_path)
    split, path = damage_camvid(kind, root)
    with pytest.raises(DatasetError) as err:
        dm.check_splits(["train", "val", "test"])
    message = str(err.value)
    assert str(path) in message and FIX in message and f"{split} samples failed the check" in message


def test_cityscapes_label_id_40_fails_naming_the_label_file(tmp_path):
    dm, root = camvid_datamodule(tmp_path, name="cityscapes", build=trees.build_cityscapes_tree)
    label = min((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    trees.write_grey_png(label, np.full(trees.SIZE, 40, np.uint8))
    with pytest.raises(DatasetError, match="40") as err:
        dm.check_splits(["val"])
    assert str(label) in str(err.value)


def test_a_jpeg_overwritten_in_place_is_caught_though_it_decodes(tmp_path):
    """1 KB in the middle of a photo-sized JPEG overwritten (same length): OpenCV still decodes it
    without an error, the check names the file."""
    import cv2

    dm, root = camvid_datamodule(tmp_path, name="ade20k", build=trees.build_ade20k_tree)
    image = root / "images" / "validation" / "ADE_val_00000001.jpg"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    photo = np.stack([np.sin(xx / (9 + 4 * c)) * 60 + yy / 3 + rng.normal(0, 12, xx.shape) for c in range(3)], -1)
    cv2.imwrite(str(image), photo.clip(0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    trees.write_grey_png(root / "annotations" / "validation" / "ADE_val_00000001.png", np.ones((240, 320), np.uint8))
    assert not dm.check_splits(["val"])["val"].bad   # the intact photo passes
    data = bytearray(image.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 1024] = rng.integers(0, 256, 1024, dtype=np.uint8).tobytes()
    image.write_bytes(bytes(data))
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is not None  # silently wrong pixels
    dm, _ = camvid_datamodule(tmp_path / "again", name="ade20k", build=lambda _: root)
    with pytest.raises(DatasetError, match="damaged JPEG") as err:
        dm.check_splits(["val"])
    assert str(image) in str(err.value) and FIX in str(err.value)


def test_quick_check_finds_broken_files_and_sizes_but_reads_no_labels(tmp_path):
    dm, root = camvid_datamodule(tmp_path, verify="quick")
    damage_camvid("label value CamVid cannot hold", root)
    assert not dm.check_splits(["val"])["val"].bad            # labels are not decoded in a quick check
    for kind in ("truncated train image (last in the epoch order)", "mask of the wrong size"):
        dm, root = camvid_datamodule(tmp_path / kind.split()[0], verify="quick")
        split, path = damage_camvid(kind, root)
        with pytest.raises(DatasetError, match=str(path)):
            dm.check_splits([split])


def test_skip_bad_leaves_bad_files_out_and_counts_them(tmp_path):
    dm, root = camvid_datamodule(tmp_path, skip_bad=True)
    damage_camvid("colour PNG where a grey label belongs", root)
    reports = dm.check_splits(["train", "val"])
    assert len(reports["train"].bad) == 1 and dm.skipped == {"train": 1}
    names = [s.name for s in dm.datasets["train"].samples]
    assert names == [n for i, n in enumerate(trees.CAMVID_SPLITS["train"]) if i != 1]
    assert [s.name for s in dm.raw_dataset("train").samples] == names   # class weights count the same files


def test_second_check_decodes_nothing_until_a_file_changes(tmp_path):
    dm, root = camvid_datamodule(tmp_path)
    first = dm.check_splits(["train"])["train"]
    assert (first.checked, first.cached) == (4, 0)
    again = camvid_datamodule(tmp_path / "again", build=lambda _: root)[0]
    again.cache_dir = dm.cache_dir
    second = again.check_splits(["train"])["train"]
    assert (second.checked, second.cached) == (0, 4)
    mask = root / "trainannot" / f"{trees.CAMVID_SPLITS['train'][0]}.png"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    third = camvid_datamodule(tmp_path / "third", build=lambda _: root)[0]
    third.cache_dir = dm.cache_dir
    assert third.check_splits(["train"])["train"].checked == 1


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_empty_split_is_an_error_naming_the_split_and_where_it_was_read(tmp_path, split):
    dm, root = camvid_datamodule(tmp_path)
    for folder in (root / split, root / f"{split}annot"):
        shutil.rmtree(folder)
        folder.mkdir()
    with pytest.raises(DatasetError) as err:
        dm.check_splits(["train", "val"])
    assert f"the {split} split is empty" in str(err.value) and str(root) in str(err.value)


# -- end to end: the moment of failure, the exit code and the message --------------------------------------
CAMVID_TINY = ["dataset=camvid", "dataset.crop_size=[12,16]", "model=unet", "model.base_channels=4", "model.depth=2",
               "data.batch_size=2", "data.num_workers=0", "trainer.max_epochs=1", "print_config=false",
               "trainer.enable_progress_bar=false"]


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]


@pytest.mark.parametrize("damage", [*DAMAGE, "empty val split", "empty train split"])
def test_bad_data_fails_the_run_before_step_zero(tmp_path, damage):
    root = trees.build_camvid_tree(tmp_path / "data")
    if damage.startswith("empty"):
        split = damage.split()[1]
        for folder in (root / split, root / f"{split}annot"):
            shutil.rmtree(folder)
            folder.mkdir()
        expected = f"the {split} split is empty"
    else:
        expected = str(damage_camvid(damage, root)[1])
    run = tmp_path / "run"
    proc = train(run, *CAMVID_TINY, f"dataset.root={root}", tiny=False, check=False)
    assert proc.returncode == 1
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert "[progress]" not in proc.stdout + proc.stderr and "train/loss" not in proc.stdout
    assert not run.exists()  # nothing was trained: no run directory is left behind


def write_random_file(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def write_state_dict(path):
    torch.save({"weight": torch.zeros(3)}, path)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 3-epoch tiny run: its directory and its console output."""
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = train(run, "trainer.max_epochs=3", "test=false")
    return run, proc.stdout


@pytest.fixture(scope="module")
def finished_run(finished):
    return finished[0]


@pytest.mark.parametrize("case", ["random file", "plain state dict", "batch size abc", "another model",
                                  "in-place resume"])
def test_bad_input_gets_one_short_message(tmp_path, finished_run, case):
    last = finished_run / "checkpoints" / "last.ckpt"
    args, expected = {
        "random file": ([f"ckpt_path={write_random_file(tmp_path / 'x.ckpt')}"], "not a readable PyTorch checkpoint"),
        "plain state dict": ([f"ckpt_path={write_state_dict(tmp_path / 'w.pt')}"], "holds only weights"),
        "batch size abc": (["data.batch_size=abc"], "data.batch_size='abc': expected an integer"),
        "another model": (["model=fcn8s", "model.backbone.pretrained=null", f"ckpt_path={last}"],
                          "holds segsuite.models.unet.UNet with 6 classes, but this run builds"),
        "in-place resume": ([f"ckpt_path={last}"], "holds the checkpoints of another run"),
    }[case]
    records = {p.name: p.read_bytes() for p in (finished_run / ".hydra").iterdir()}
    run = finished_run if case == "in-place resume" else tmp_path / "run"
    tiny = [a for a in TINY if not (case == "another model" and a.startswith("model."))]
    proc = run_module("train", tiny + [f"hydra.run.dir={run}", *args], cwd=tmp_path, check=False)
    lines = error_lines(proc)
    assert proc.returncode == 1
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert 1 <= len(lines) <= 2 and len(proc.stderr) < 800, proc.stderr
    if case == "in-place resume":
        assert {p.name: p.read_bytes() for p in (finished_run / ".hydra").iterdir()} == records
    else:
        assert not run.exists()


def test_final_table_is_the_best_epoch_and_run_facts_hold_the_documented_keys(finished):
    run, stdout = finished
    rows = val_rows(run)
    best = max(range(len(rows)), key=lambda i: (float(rows[i]["val/mIoU"]), -i))  # first of equals, as best.ckpt
    title = next(line for line in stdout.splitlines() if line.startswith("Validation metrics of the best epoch"))
    assert title.startswith(f"Validation metrics of the best epoch ({best + 1},")
    summary = next(line for line in stdout.splitlines()[stdout.splitlines().index(title):] if line.startswith("aAcc"))
    assert f"mIoU {100 * float(rows[best]['val/mIoU']):.2f}" in summary
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["epoch"] == best
    facts = json.loads((run / "run_facts.json").read_text())
    assert {"global_batch_size", "per_device_batch_size", "world_size", "precision", "seed"} <= set(facts)
    assert facts["per_device_batch_size"] == 4 and facts["skipped_bad_samples"] == {}


# -- crashes and Ctrl-C: a checkpoint at the step, and an exact resume from it -----------------------------
ENET = [*(a for a in TINY if not a.startswith("model.")), "model=enet", "data.batch_size=4", "trainer.max_epochs=3",
        "trainer.deterministic=warn", "test=false"]   # max_unpool2d has no deterministic kernel; on CPU it is


def drill(step: int, kind: str) -> list[str]:
    return ["+callbacks.drill._target_=segsuite.callbacks.FailAtStep", f"+callbacks.drill.step={step}",
            f"+callbacks.drill.kind={kind}"]


def resume_args(stderr: str) -> list[str]:
    """The overrides of the resume command the failed run printed (its drill left out)."""
    command = next(line.strip() for line in stderr.splitlines() if line.strip().startswith("python -m segsuite.train"))
    return [a for a in shlex.split(command)[3:] if "callbacks.drill" not in a]


@pytest.mark.parametrize("kind, workers", [("crash", 0), ("interrupt", 1)])
def test_resume_from_a_crash_mid_epoch_equals_the_uninterrupted_run(tmp_path, kind, workers):
    """ENet (dropout, BatchNorm) on 16 images in batches of 4: step 6 is the third batch of epoch 2.
    Also the test that fails when Lightning changes the loop state the mid-epoch resume relies on."""
    full, broken, resumed = tmp_path / "full", tmp_path / "broken", tmp_path / "resumed"
    common = [a.replace("data.num_workers=0", f"data.num_workers={workers}") for a in ENET]
    train(full, *common, tiny=False)
    proc = train(broken, *common, *drill(6, kind), tiny=False, check=False)
    assert proc.returncode == 1
    ckpt = broken / "checkpoints" / "interrupted.ckpt"
    assert ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] == 6
    assert f"ckpt_path={ckpt}" in proc.stderr and ("interrupted" if kind == "interrupt" else "failed") in proc.stderr
    run_module("train", resume_args(proc.stderr) + [f"hydra.run.dir={resumed}"], cwd=tmp_path)
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [r["val/mIoU"] for r in val_rows(full)[1:]] == [r["val/mIoU"] for r in val_rows(resumed)]
    facts = json.loads((resumed / "run_facts.json").read_text())
    assert facts["resumed_from"]["ckpt_path"] == str(ckpt) and facts["resumed_from"]["global_step"] == 6


def test_init_from_starts_a_new_run_from_the_checkpoint_weights(finished_run, compose_cfg, tmp_path):
    from segsuite.build import build_components

    best = finished_run / "checkpoints" / "best.ckpt"
    cfg = compose_cfg("train", [*TINY, f"init_from={best}", f"paths.output_dir={tmp_path}"])
    _, module = build_components(cfg)
    stored = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in module.net.state_dict().items():
        assert torch.equal(value, stored[f"net.{key}"]), key
    wider = compose_cfg("train", [*TINY, "model.base_channels=8", f"init_from={best}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=f"init_from={best}: its weights do not fit the configured model"):
        build_components(wider)
