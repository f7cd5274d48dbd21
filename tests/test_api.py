"""The Python API and names where paths go: `segsuite.load(...).predict` gives the command's masks for
every input kind; zoo names work wherever a checkpoint path does and every load of a zoo checkpoint
checks its sha256; `SegmentationModule.load_from_checkpoint` reads every checkpoint segsuite writes;
`pretrained: imagenet` resolves to torchvision's URL, cached and hash-checked (no network here)."""

from __future__ import annotations

import doctest
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

import segsuite
from runs import run_module, train
from segsuite.checkpoint import build_net, load_checkpoint, resolve_checkpoint_path
from segsuite.models.backbones import pretrained
from segsuite.models.backbones.resnet import ResNet
from segsuite.module import SegmentationModule
from segsuite.predict import predict
from segsuite.utils.download import cached_download, sha256_of
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers
from segsuite.zoo import REQUIRED_KEYS, available, load_entry

REPO = Path(__file__).resolve().parents[1]
CAMVID_TEST = REPO / "data" / "CamVid" / "test"
README_IMAGE = CAMVID_TEST / "0001TP_008550.png"


def composed(name: str, out: Path, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(name, overrides=[f"paths.output_dir={out}", *overrides])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("api") / "run"
    train(run, "test=false", "trainer.max_epochs=1")
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(1)
    arrays = {"a": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              "b": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              "c": rng.integers(0, 256, (21, 45, 3), dtype=np.uint8)}
    for name, array in arrays.items():
        Image.fromarray(array).save(folder / f"{name}.png")
    return {"folder": folder, **arrays}


def command_masks(ckpt: Path, folder: Path, out: Path, *overrides: str, subprocess_run: bool = False) -> dict:
    """The masks `python -m segsuite.predict` writes for every image of `folder`, by stem."""
    args = [f"ckpt_path={ckpt}", f"input={folder}", f"output={out}", "progress_bar=false", "device=cpu", *overrides]
    if subprocess_run:
        run_module("predict", args, cwd=out.parent)
    else:
        predict(composed("predict", out, *args))
    return {p.name[:-len("_mask.png")]: np.asarray(Image.open(p)) for p in out.glob("*_mask.png")}


def test_import_segsuite_stays_light():
    code = "import sys, segsuite; assert 'torch' not in sys.modules, 'torch imported'; print(segsuite.load.__module__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "segsuite.prediction"


def test_load_predicts_what_the_command_writes_for_every_input_kind(run_dir, images, tmp_path):
    best = run_dir / "checkpoints" / "best.ckpt"
    folder = images["folder"]
    one_by_one = command_masks(best, folder, tmp_path / "single", "batch_size=1")
    batched = command_masks(best, folder, tmp_path / "batched", subprocess_run=True)  # the command: batches of 4
    assert sorted(one_by_one) == sorted(batched) == ["a", "b", "c"]

    p = segsuite.load(run_dir, device="cpu")  # a run directory: its best checkpoint
    ckpt = load_checkpoint(best)
    assert isinstance(p.net, torch.nn.Module) and not p.net.training
    assert p.classes == ckpt["segsuite"]["class_names"] and p.palette.shape == (len(p.classes), 3)
    assert p.mean == ckpt["segsuite"]["mean"] and p.std == ckpt["segsuite"]["std"]

    for name in "abc":  # single images: a path, a PIL image, a numpy array, a uint8 tensor
        array, expected = images[name], one_by_one[name]
        for x in (folder / f"{name}.png", str(folder / f"{name}.png"), Image.open(folder / f"{name}.png"), array,
                  torch.from_numpy(array).permute(2, 0, 1)):
            mask = p.predict(x)
            assert mask.shape == array.shape[:2] and mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, expected, err_msg=f"{name}: {type(x).__name__}")

    # batches: same-size images go through together, as in the command
    paths = [folder / f"{n}.png" for n in "abc"]
    for mask, name in zip(p.predict(paths), "abc"):
        np.testing.assert_array_equal(mask, batched[name])
    stacked = np.stack([images["a"], images["b"]])
    np.testing.assert_array_equal(p.predict(stacked), np.stack([batched["a"], batched["b"]]))
    np.testing.assert_array_equal(p.predict(torch.from_numpy(stacked).permute(0, 3, 1, 2)),
                                  np.stack([batched["a"], batched["b"]]))

    # probabilities: [C,H,W], summing to one, their argmax the mask; float 0-1 input gives the same
    labels, probs = p.predict(images["c"], probs=True)
    assert probs.shape == (len(p.classes), 21, 45) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), labels)
    _, float_probs = p.predict(torch.from_numpy(images["c"]).permute(2, 0, 1).float() / 255, probs=True)
    np.testing.assert_allclose(float_probs, probs, atol=1e-4)
    with pytest.raises(ValueError, match="0-1"):
        p.predict(images["c"].astype(np.float32))  # 0-255 floats are refused, not misread

    # the checkpoint file itself, and test-time augmentation by name, as tta=flip in the command
    flipped = command_masks(best, folder, tmp_path / "flip", "batch_size=1", "tta=flip")
    np.testing.assert_array_equal(segsuite.load(best, device="cpu", tta="flip").predict(images["c"]), flipped["c"])


def test_load_names_what_it_cannot_find(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no zoo entry of that name \(zoo entries: .*camvid_enet"):
        segsuite.load(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="holds no checkpoints/best.ckpt"):
        segsuite.load(tmp_path)


def test_load_from_checkpoint_rebuilds_a_training_checkpoint(run_dir):
    best = run_dir / "checkpoints" / "best.ckpt"
    module = SegmentationModule.load_from_checkpoint(best)
    ckpt = load_checkpoint(best)
    assert module.class_names == ckpt["segsuite"]["class_names"]
    assert module.run_manifest.config == ckpt["segsuite"]["config"]
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(x), build_net(ckpt).eval()(x))


@pytest.mark.parametrize("name", available())
def test_load_from_checkpoint_reads_every_zoo_checkpoint(name):
    entry = load_entry(name)
    module = SegmentationModule.load_from_checkpoint(name)  # written without Lightning hyperparameters
    assert sum(p.numel() for p in module.net.parameters()) == entry.record.parameters
    assert module.class_names == list(entry.record.per_class)
    same = SegmentationModule.load_from_checkpoint(entry.checkpoint, map_location="cpu", strict=True)
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), same.state_dict().values()))


def test_a_zoo_name_goes_where_a_checkpoint_path_goes(tmp_path):
    entry = load_entry("camvid_enet")
    assert resolve_checkpoint_path("camvid_enet", "init_from") == entry.checkpoint
    cfg = composed("train", tmp_path, "experiment=camvid_enet", "init_from=camvid_enet")
    from segsuite.build import build_net as build_run_net
    from segsuite.preflight import check_run_paths

    check_run_paths(cfg)
    net = build_run_net(cfg)
    stored = torch.load(entry.checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(v, stored[f"net.{k}"]) for k, v in net.state_dict().items())
    Image.fromarray(np.full((40, 56, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    result = predict(composed("predict", tmp_path, "ckpt_path=camvid_enet", f"input={tmp_path / 'grey.png'}",
                              f"output={tmp_path / 'out'}", "progress_bar=false", "device=cpu"))
    assert np.asarray(Image.open(result["written"][0])).shape == (40, 56)


# -- zoo checkpoints are verified on every load ---------------------------------------------------------------
def _zoo_with(tmp_path: Path, ckpt: Path, **extra) -> Path:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copyfile(ckpt, zoo / "tiny.ckpt")
    record = {key: "x" for key in REQUIRED_KEYS} | {"checkpoint": "tiny.ckpt", "sha256": sha256_of(zoo / "tiny.ckpt")}
    OmegaConf.save(OmegaConf.create(record | extra), zoo / "tiny.yaml")
    return zoo


def test_a_changed_zoo_checkpoint_is_refused_in_one_line(run_dir, tmp_path, monkeypatch):
    zoo = _zoo_with(tmp_path, run_dir / "checkpoints" / "best.ckpt")
    monkeypatch.setattr("segsuite.zoo.zoo_dir", lambda: zoo)
    assert segsuite.load("tiny", device="cpu").classes  # intact: loads by name
    ckpt = torch.load(zoo / "tiny.ckpt", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.startswith("net."))
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 1  # a readable checkpoint with other weights
    torch.save(ckpt, zoo / "tiny.ckpt")
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    loads = {"segsuite.load": lambda: segsuite.load("tiny"),
             "by path": lambda: load_checkpoint(zoo / "tiny.ckpt"),
             "load_from_checkpoint": lambda: SegmentationModule.load_from_checkpoint("tiny"),
             "ckpt_path=": lambda: predict(composed("predict", tmp_path, "ckpt_path=tiny", f"input={image}"))}
    for what, load in loads.items():
        with pytest.raises(ValueError) as err:
            load()
        message = str(err.value)
        assert "\n" not in message, what
        assert re.search(r"zoo entry 'tiny': .*tiny\.ckpt has sha256 [0-9a-f]{64}, the entry records", message), what


def test_a_zoo_entry_with_a_url_is_fetched_into_the_torch_cache_and_verified(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = tmp_path / "server" / "tiny.ckpt"
    source.parent.mkdir()
    shutil.copyfile(run_dir / "checkpoints" / "best.ckpt", source)
    zoo = _zoo_with(tmp_path, source, url=source.as_uri())
    (zoo / "tiny.ckpt").unlink()  # only the URL is left
    monkeypatch.setattr("segsuite.zoo.zoo_dir", lambda: zoo)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "tiny.ckpt"
    assert segsuite.load("tiny", device="cpu").classes and cached.is_file()
    cached.write_bytes(cached.read_bytes()[:-10])  # a damaged cache file is refused, naming it
    with pytest.raises(ValueError, match=f"{re.escape(str(cached))} has sha256"):
        segsuite.load("tiny")
    cached.unlink()
    source.unlink()  # offline: the URL cannot be read
    with pytest.raises(FileNotFoundError) as err:
        segsuite.load("tiny")
    assert "\n" not in str(err.value)
    assert source.as_uri() in str(err.value) and f"put that file at {cached}" in str(err.value)


# -- pretrained: imagenet -----------------------------------------------------------------------------------
def test_imagenet_names_resolve_to_torchvision_urls():
    base = "https://download.pytorch.org/models/"
    assert pretrained.weights_url("resnet50", "imagenet") == base + "resnet50-0676ba61.pth"
    assert pretrained.weights_url("resnet50", "DEFAULT") == base + "resnet50-11ad3fa6.pth"
    assert pretrained.weights_url("resnet101", "ResNet101_Weights.IMAGENET1K_V2") == base + "resnet101-cd907fc2.pth"
    assert pretrained.weights_url("resnet18", "IMAGENET1K_V1") == base + "resnet18-f37072fd.pth"
    assert pretrained.weights_url("vgg16_bn", "imagenet") == base + "vgg16_bn-6c64b313.pth"
    assert pretrained.weights_url("vgg16", "imagenet") == base + "vgg16-397923af.pth"
    with pytest.raises(ValueError, match=r"pretrained=IMAGENET1K_V2: .* of resnet18 \(names: imagenet, "):
        pretrained.weights_url("resnet18", "IMAGENET1K_V2")  # torchvision has only V1 for ResNet-18
    # the shipped recipes name the same files as their URLs
    for recipe in ("cityscapes_pspnet_r50", "camvid_segnet"):
        url = OmegaConf.load(REPO / "conf" / "experiment" / f"{recipe}.yaml").model.backbone.pretrained
        assert url in {pretrained.weights_url(a, "imagenet") for a in ("resnet50", "vgg16_bn")}


def _weights_file(folder: Path) -> tuple[Path, dict]:
    """A ResNet-18 state dict saved under torch.hub's naming (`resnet18-<sha256 prefix>.pth`)."""
    state = ResNet(depth=18).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "weights.pth"
    torch.save(state, plain)
    named = folder / f"resnet18-{sha256_of(plain)[:8]}.pth"
    plain.rename(named)
    return named, state


def test_pretrained_imagenet_loads_from_the_torch_cache_with_its_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    weights, state = _weights_file(cache)  # a file already in the cache: used, its hash prefix checked
    url = f"https://download.pytorch.org/models/{weights.name}"
    table = {"imagenet": "IMAGENET1K_V1",
             "architectures": {"resnet18": {"weights_class": "ResNet18_Weights", "IMAGENET1K_V1": url}}}
    monkeypatch.setattr(pretrained, "_weights_table", lambda: table)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    for setting in ("imagenet", url):
        net = ResNet(depth=18, pretrained=setting)
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())

    # a file whose hash does not match its name is refused, naming it and the expected prefix
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    shutil.copyfile(weights, cache / "resnet18-f37072fd.pth")
    with pytest.raises(ValueError, match=r"resnet18-f37072fd\.pth has sha256 [0-9a-f]{64}, but .* starting with "
                                         r"f37072fd"):
        ResNet(depth=18, pretrained="imagenet")


def test_pretrained_imagenet_offline_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as err:
        ResNet(depth=50, pretrained="imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert f"put that file at {tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth'}" in message


def test_a_local_file_url_is_downloaded_through_the_same_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights, state = _weights_file(tmp_path / "mirror")
    cached = cached_download(weights.as_uri(), "pretrained")
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / weights.name
    net = ResNet(depth=18, pretrained=weights.as_uri())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    bad = tmp_path / "mirror" / "resnet18-00000000.pth"
    shutil.copyfile(weights, bad)
    with pytest.raises(ValueError, match="it was removed"):
        cached_download(bad.as_uri(), "pretrained")
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / bad.name).exists()


# -- the real zoo entry on CamVid ---------------------------------------------------------------------------
def _camvid_or_skip() -> None:
    if not README_IMAGE.is_file():
        pytest.skip(f"CamVid is not at {CAMVID_TEST.parent} (scripts/prepare: docs/datasets.md)")


def test_readme_python_api_example(monkeypatch):
    _camvid_or_skip()
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Python API\s+```python\n(.*?)```", text, re.DOTALL).group(1)
    assert len(block.strip().splitlines()) == 5
    monkeypatch.chdir(REPO)
    test = doctest.DocTestParser().get_doctest(block, {}, "README", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.slow
def test_camvid_enet_from_python_equals_the_command(tmp_path):
    _camvid_or_skip()
    code = f"import segsuite; p = segsuite.load('camvid_enet'); print(p.predict('{README_IMAGE}').shape)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert proc.stdout.strip() == "(360, 480)"
    images = sorted(CAMVID_TEST.glob("*.png"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images:
        shutil.copyfile(image, folder / image.name)
    masks = command_masks(Path("camvid_enet"), folder, tmp_path / "out", subprocess_run=True)
    p = segsuite.load("camvid_enet", device="cpu")
    for image, mask in zip(images, p.predict(images)):
        np.testing.assert_array_equal(mask, masks[image.stem])
