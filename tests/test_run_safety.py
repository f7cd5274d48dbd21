"""Runs a user can trust: bad data fails before step 0, crashes keep a resumable checkpoint, errors are short."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from runs import TINY, run_module, train, val_rows
from segsuite.data.datamodule import SegDataModule
from segsuite.data.datasets.base import DatasetError
from support import dataset_trees as trees
from support.dataset_trees import compose

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
    assert len(reports["train"].bad) == 1 and dm.skipped == {"train": reports["train"].bad}
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


def test_skip_bad_names_files_left_out_for_want_of_their_partner(tmp_path):
    dm, root = camvid_datamodule(tmp_path, skip_bad=True)
    image = root / "train" / f"{trees.CAMVID_SPLITS['train'][2]}.png"
    (root / "trainannot" / image.name).unlink()
    with pytest.warns(UserWarning, match="has no mask"):
        dm.check_splits(["train"])
    assert len(dm.skipped["train"]) == 1 and f"image {image} has no mask" in dm.skipped["train"][0]


def test_a_file_rebroken_with_its_size_and_mtime_set_back_is_checked_again(tmp_path):
    """The cache key holds the ctime, which setting the mtime back changes."""
    dm, root = camvid_datamodule(tmp_path)
    assert dm.check_splits(["train"])["train"].checked == 4
    image = root / "train" / f"{trees.CAMVID_SPLITS['train'][0]}.png"
    before = image.stat()
    time.sleep(0.05)  # file times tick with the kernel's coarse clock (ms)
    data = image.read_bytes()
    image.write_bytes(data[:-12] + b"\0" * 12)  # same size, the PNG's IEND chunk gone
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = camvid_datamodule(tmp_path / "again", build=lambda _: root)[0]
    again.cache_dir = dm.cache_dir
    with pytest.raises(DatasetError, match=f"{image}: truncated PNG"):
        again.check_splits(["train"])


@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_symlink_loop_is_named_and_left_out_with_skip_bad(tmp_path, skip_bad):
    dm, root = camvid_datamodule(tmp_path, skip_bad=skip_bad)
    image = root / "train" / f"{trees.CAMVID_SPLITS['train'][1]}.png"
    image.unlink()
    image.symlink_to(image.name)   # ln -s X.png X.png
    if not skip_bad:
        with pytest.raises(DatasetError, match="link loop") as err:
            dm.check_splits(["train"])
        assert str(image) in str(err.value) and FIX in str(err.value)
        return
    dm.check_splits(["train"])
    assert [s.name for s in dm.datasets["train"].samples] == [
        n for i, n in enumerate(trees.CAMVID_SPLITS["train"]) if i != 1]
    assert len(dm.skipped["train"]) == 1 and str(image) in dm.skipped["train"][0]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_sample_found_bad_in_use_leaves_its_batch_and_is_named(tmp_path, workers):
    """data.verify=off: the bad file is found by the loader (in a worker process with workers=1); its
    batch holds one sample less, no other sample stands in, and the main process names it."""
    dm, root = camvid_datamodule(tmp_path, verify="off", skip_bad=True)
    dm.num_workers_setting = workers
    _, path = damage_camvid("colour PNG where a grey label belongs", root)
    dm.check_splits(["train"])
    assert dm.skipped == {}
    names = []
    for batch in dm.train_dataloader():
        batch = dm.on_before_batch_transfer(batch, 0)
        assert "skipped" not in batch and batch["image"].shape[0] == len(batch["name"])
        names += batch["name"]
    assert sorted(names) == sorted(n for i, n in enumerate(trees.CAMVID_SPLITS["train"]) if i != 1)
    assert len(dm.skipped["train"]) == 1 and str(path) in dm.skipped["train"][0]


def test_a_split_whose_every_sample_is_bad_in_use_is_an_error(tmp_path):
    dm, root = camvid_datamodule(tmp_path, verify="off", skip_bad=True)
    for name in trees.CAMVID_SPLITS["val"]:
        (root / "val" / f"{name}.png").write_bytes(b"junk")
    dm.check_splits(["val"])
    with pytest.raises(DatasetError, match="every sample of the val split .2. is bad"):
        for batch in dm.val_dataloader():
            dm.on_before_batch_transfer(batch, 0)


def test_a_batch_of_bad_samples_only_is_empty():
    from segsuite.data.collate import collate

    batch = collate([{"name": "a", "skipped": "a.png: bad"}, {"name": "b", "skipped": "b.png: bad"}], split="val")
    assert batch["skipped"] == [("val", "a.png: bad"), ("val", "b.png: bad")]
    assert batch["image"].shape[0] == batch["mask"].shape[0] == 0 and batch["name"] == []


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


@pytest.mark.slow
def test_a_skip_bad_run_names_every_sample_it_left_out(tmp_path):
    """Train: one image without its mask, one truncated image (the quick check finds it), one colour
    label (found only in use, by a worker); val: a label CamVid cannot hold (found in use). Batches of
    one, so the bad samples found in use leave empty batches, which are skipped. Each of the four is
    named in run_facts.json and in the summary the run prints at its end."""
    root = trees.build_camvid_tree(tmp_path / "data")
    unpaired = root / "train" / f"{trees.CAMVID_SPLITS['train'][2]}.png"
    (root / "trainannot" / unpaired.name).unlink()
    bad = {damage_camvid(kind, root)[1] for kind in ("truncated train image (last in the epoch order)",
                                                     "colour PNG where a grey label belongs",
                                                     "label value CamVid cannot hold")}
    run = tmp_path / "run"
    args = [a.replace("data.batch_size=2", "data.batch_size=1").replace("num_workers=0", "num_workers=1")
            for a in CAMVID_TINY]
    proc = train(run, *args, f"dataset.root={root}", "data.verify=quick", "data.skip_bad=true", tiny=False)
    facts = json.loads((run / "run_facts.json").read_text())["skipped_bad_samples"]
    assert {split: entry["count"] for split, entry in facts.items()} == {"train": 3, "val": 1}
    for path in [unpaired, *bad]:
        assert sum(str(path) in message for entry in facts.values() for message in entry["samples"]) == 1, path
        assert str(path) in proc.stdout.split("train split: 3 bad sample(s) left out")[-1]
    assert "val split: 1 bad sample(s) left out (data.skip_bad=true)" in proc.stdout


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


def test_a_checkpoint_of_another_model_is_named_the_same_way_everywhere():
    """Starting from weights (`init_from`) and rebuilding a stored model refuse another architecture or
    class count with the message resuming gives (one check, `segsuite.checkpoint.check_same_model`)."""
    from omegaconf import OmegaConf

    from segsuite.checkpoint import build_net, load_net_weights
    from segsuite.manifest import MANIFEST_KEY, RunManifest

    stored = {"_target_": "segsuite.models.unet.UNet", "num_classes": 6, "base_channels": 4, "depth": 2}
    manifest = RunManifest(config={"model": stored}, class_names=[str(i) for i in range(6)], palette=[[0, 0, 0]] * 6,
                           mean=[0.0] * 3, std=[1.0] * 3, num_classes=6, ignore_index=255)
    ckpt = {MANIFEST_KEY: manifest.to_dict(), "state_dict": {}}
    other = OmegaConf.create({**stored, "num_classes": 3})
    with pytest.raises(ValueError, match=r"^init_from=x\.ckpt holds segsuite\.models\.unet\.UNet with 6 classes, but "
                                         r"the run builds segsuite\.models\.unet\.UNet with 3 classes; start from a "
                                         r"checkpoint of the same model and dataset$"):
        load_net_weights(torch.nn.Identity(), ckpt, other, "init_from=x.ckpt")
    with pytest.raises(ValueError, match=r"^checkpoint holds segsuite\.models\.unet\.UNet with 6 classes, but the "
                                         r"requested model is segsuite\.models\.fcn\.FCN with 6 classes$"):
        build_net(ckpt, OmegaConf.create({**stored, "_target_": "segsuite.models.fcn.FCN"}))


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


def drill(step: int, kind: str, where: str = "start") -> list[str]:
    return ["+callbacks.drill._target_=segsuite.callbacks.FailAtStep", f"+callbacks.drill.step={step}",
            f"+callbacks.drill.kind={kind}", f"+callbacks.drill.where={where}"]


def resume_args(stderr: str) -> list[str]:
    """The overrides of the resume command the failed run printed (its drill left out)."""
    command = next(line.strip() for line in stderr.splitlines() if line.strip().startswith("python -m segsuite.train"))
    return [a for a in shlex.split(command)[3:] if "callbacks.drill" not in a]


def assert_same_state(a: dict, b: dict) -> None:
    """Equal weights *and* buffers: BatchNorm's running statistics and `num_batches_tracked` included."""
    assert a["global_step"] == b["global_step"]
    assert any(k.endswith("num_batches_tracked") for k in a["state_dict"])  # the buffers are compared too
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.parametrize("kind, workers, where, code, stopped_at, says", [
    # a crash before the step's forward pass (the backward case below covers a crash too, in the fast suite)
    pytest.param("crash", 0, "start", 1, 6, "failed", marks=pytest.mark.slow),
    # Ctrl-C with a worker (the fast suite covers each stop signal's exit and resume command elsewhere)
    pytest.param("interrupt", 1, "start", 130, 6, "interrupted", marks=pytest.mark.slow),
    # after the forward pass: BatchNorm already counted the batch the crash stopped
    ("crash", 0, "backward", 1, 6, "failed"),
    # SIGTERM to the main process only (preemption; the worker does not get it): the step ends, then it stops
    pytest.param("SIGTERM", 1, "backward", 143, 7, "stopped by SIGTERM", marks=pytest.mark.slow),
])
def test_resume_from_a_crash_mid_epoch_equals_the_uninterrupted_run(tmp_path, kind, workers, where, code, stopped_at,
                                                                     says):
    """ENet (dropout, BatchNorm) on 16 images in batches of 4: step 6 is the third batch of epoch 2.
    Also the test that fails when Lightning changes the loop state the mid-epoch resume relies on."""
    full, broken, resumed = tmp_path / "full", tmp_path / "broken", tmp_path / "resumed"
    common = [a.replace("data.num_workers=0", f"data.num_workers={workers}") for a in ENET]
    train(full, *common, tiny=False)
    proc = train(broken, *common, *drill(6, kind, where), tiny=False, check=False)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert (broken / "FAILED").is_file()
    ckpt = broken / "checkpoints" / "interrupted.ckpt"
    assert ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] == stopped_at
    assert f"ckpt_path={ckpt}" in proc.stderr and says in proc.stderr
    run_module("train", resume_args(proc.stderr) + [f"hydra.run.dir={resumed}"], cwd=tmp_path)
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    assert_same_state(a, b)
    assert [r["val/mIoU"] for r in val_rows(full)[1:]] == [r["val/mIoU"] for r in val_rows(resumed)]
    facts = json.loads((resumed / "run_facts.json").read_text())
    assert facts["resumed_from"]["ckpt_path"] == str(ckpt) and facts["resumed_from"]["global_step"] == stopped_at


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", pytest.param("SIGHUP", marks=pytest.mark.slow),
                                  pytest.param("SIGUSR1", marks=pytest.mark.slow)])
def test_every_stop_signal_leaves_a_checkpoint_the_resume_command_failed_and_a_nonzero_exit(tmp_path, name):
    """A signal to the training process (Ctrl-C, a scheduler's preemption or kill, a closed terminal) is a
    failure: the step it came in ends, `interrupted.ckpt` holds the state after it, and exit 128 + signal."""
    run = tmp_path / "run"
    proc = train(run, "test=false", *drill(5, name, "backward"), check=False)
    assert proc.returncode == 128 + getattr(signal, name), proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6
    assert f"ckpt_path={ckpt}" in proc.stderr and f"error: stopped by {name}" in proc.stderr
    assert (run / "FAILED").is_file() and "Traceback" not in proc.stderr


@pytest.mark.slow  # a crashed run and a refused resume, ~16 s
def test_a_mid_epoch_checkpoint_is_not_resumed_with_another_batch_size(tmp_path):
    """Resuming at batch 3 of 4 with half the batch size would start the epoch's rest at sample 4, not 8."""
    broken = tmp_path / "broken"
    proc = train(broken, "test=false", *drill(6, "crash"), check=False)
    ckpt = broken / "checkpoints" / "interrupted.ckpt"
    assert proc.returncode == 1 and ckpt.is_file()
    run = tmp_path / "resumed"
    proc = train(run, "test=false", "data.batch_size=2", f"ckpt_path={ckpt}", check=False)
    assert proc.returncode == 1
    assert (f"ckpt_path={ckpt} was saved in the middle of epoch 2, after 2 batches of data.batch_size=4" in proc.stderr
            and "Resume with data.batch_size=4" in proc.stderr), proc.stderr[-2000:]
    assert len(error_lines(proc)) <= 2 and "Traceback" not in proc.stderr
    assert not run.exists()


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


# -- faults while writing: a full disk, a kill; two runs in one directory ----------------------------------
def test_a_checkpoint_write_that_fails_leaves_the_previous_file_and_says_so_in_one_line(tmp_path, monkeypatch):
    from segsuite.utils import safe_io

    path = tmp_path / "checkpoints" / "last.ckpt"
    writer = safe_io.AtomicCheckpointIO()
    writer.save_checkpoint({"global_step": 1, "w": torch.zeros(10)}, path)
    good = path.read_bytes()
    real_write = os.write

    def disk_fills(fd, data):  # 1000 bytes fit, then the disk is full
        real_write(fd, bytes(data[:1000]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def killed(fd, data):
        real_write(fd, bytes(data[:1000]))
        raise KeyboardInterrupt

    for fault, error in ((disk_fills, safe_io.DiskFullError), (killed, KeyboardInterrupt)):
        monkeypatch.setattr(safe_io.os, "write", fault)
        with pytest.raises(error) as err:
            writer.save_checkpoint({"global_step": 2, "w": torch.ones(100_000)}, path)
        monkeypatch.undo()
        assert path.read_bytes() == good and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
        if error is safe_io.DiskFullError:
            assert str(err.value).startswith(f"no space left on the device for {path}: it needs ")
    message = str(safe_io.disk_full(path, 400_000))
    assert "\n" not in message and str(path) in message and "it needs 390.6 KB" in message and " free" in message


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mounted under tmp_path (root only; skipped elsewhere): `mount(bytes)` returns its folder."""
    mounted = []

    def mount(size: int):
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("then", ["epoch end", "crash"])
def test_a_full_disk_keeps_the_last_good_checkpoints_and_fails_in_one_line(tmp_path, small_disk, then):
    """The run's disk fills up in epoch 2 (64 KB left), then the epoch's checkpoints are due, or a crash comes
    first: the checkpoints of epoch 1 stay whole, no cut or empty file is left (interrupted.ckpt does not fit
    either), and the error is one line."""
    run = small_disk(64 * 1024 * 1024) / "run"
    fill = [a.replace("callbacks.drill", "callbacks.fill") for a in drill(5, "disk_full")]
    crash = drill(6, "crash") if then == "crash" else []
    proc = train(run, "trainer.max_epochs=3", "test=false", *fill, *crash, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in error_lines(proc) if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if then == "crash":
        assert lines == ["error: RuntimeError: crash drill at step 6"]
        assert "interrupted.ckpt not saved: no space left on the device for" in proc.stderr
    else:
        assert lines[0].startswith("error: no space left on the device for ") and "it needs" in lines[0], lines
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt"], names   # no temporary file, no cut or empty interrupted.ckpt
    for name in names:
        assert torch.load(run / "checkpoints" / name, weights_only=True)["global_step"] == 4
    assert (run / "FAILED").is_file()


def test_two_runs_started_together_in_one_directory_one_is_refused(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONHASHSEED": "0"}
    args = [sys.executable, "-m", "segsuite.train", *TINY, f"hydra.run.dir={run}", "test=false"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert sorted(codes) == [0, 1], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    stderr = outputs[loser][1]
    assert f"hydra.run.dir={run} is in use by another run (pid {procs[winner].pid} on " in stderr, stderr
    assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1
    assert "Traceback" not in stderr
    assert json.loads((run / "run_facts.json").read_text())["seed"] == 42 and (run / "metrics.json").is_file()
    assert f"run directory: {run}" in outputs[winner][0]
