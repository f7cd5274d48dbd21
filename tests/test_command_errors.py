"""One voice for every command (issue 27.15): evaluate, predict, export and reproduce fail as train does,
with a short `error: ...` message and no traceback (`HYDRA_FULL_ERROR=1` shows it), leaving no stub run
folder; export without the ONNX packages names the extra to install; a bad `loss.weight` names the setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runs import run_module
from segsuite.preflight import check_config_values
from segsuite.zoo import load_entry

ZOO_CKPT = load_entry("camvid_enet").checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A good checkpoint (a copy of a zoo one) and a copy cut short, as an interrupted download leaves it."""
    folder = tmp_path_factory.mktemp("ckpts")
    good, cut = folder / "good.ckpt", folder / "cut.ckpt"
    shutil.copyfile(ZOO_CKPT, good)
    cut.write_bytes(good.read_bytes()[:100_000])
    return good, cut


def assert_one_voice(proc: subprocess.CompletedProcess, work: Path, *expected: str) -> None:
    """Failed with a short message naming `expected`, no traceback, and no run folder left in `work`."""
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert len(lines) - start <= 10 and lines[-1] == "(set HYDRA_FULL_ERROR=1 for the traceback)", proc.stderr
    for text in expected:
        assert text in proc.stderr
    runs = list((work / "outputs").glob("*/runs/*"))
    assert runs == [], f"stub run folders left: {runs}"


@pytest.mark.parametrize("command", ["evaluate", pytest.param("predict", marks=pytest.mark.slow),
                                     pytest.param("export", marks=pytest.mark.slow)])
def test_a_cut_checkpoint_is_one_line(command, checkpoints, tmp_path):
    image = tmp_path / "street.png"
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(image)
    extra = {"evaluate": ["split=test"], "predict": [f"input={image}"], "export": ["format=torchscript"]}[command]
    proc = run_module(command, [f"ckpt_path={checkpoints[1]}", *extra], cwd=tmp_path, check=False)
    assert_one_voice(proc, tmp_path, "not a readable PyTorch checkpoint", str(checkpoints[1]))


@pytest.mark.parametrize("root", ["missing", "empty"])
def test_evaluate_without_its_dataset_is_one_message(root, checkpoints, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_module("evaluate", [f"ckpt_path={checkpoints[0]}", "split=test", f"dataset.root={tmp_path / root}",
                                   "num_workers=0"], cwd=tmp_path, check=False)
    assert_one_voice(proc, tmp_path, "error: CamVid: directory", "dataset.root")


def test_predict_on_an_empty_folder_is_one_line(checkpoints, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_module("predict", [f"ckpt_path={checkpoints[0]}", f"input={tmp_path / 'empty'}"], cwd=tmp_path,
                      check=False)
    assert_one_voice(proc, tmp_path, "holds no images")


def test_export_without_onnx_names_the_extra(checkpoints, tmp_path):
    hide = tmp_path / "hide_onnx"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['onnx'] = None  # as if not installed\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "segsuite.export", f"ckpt_path={checkpoints[0]}", "format=onnx"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert_one_voice(proc, tmp_path, "format=onnx needs onnx", "pip install 'segsuite[export]'", "format=torchscript")


@pytest.mark.parametrize("root", ["missing", pytest.param("empty", marks=pytest.mark.slow)])
def test_reproduce_without_its_dataset_is_one_message(root, tmp_path):
    (tmp_path / "empty").mkdir()
    work = tmp_path / "outputs" / "reproduce" / "w"
    proc = run_module("reproduce", ["camvid_enet", "--data-root", str(tmp_path / root), "--workdir", str(work)],
                      cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
    assert len(proc.stderr.splitlines()) <= 10
    assert not work.exists()


@pytest.mark.parametrize(("override", "named"), [
    ("loss.weight=[1,1,1,1,1,abc]", "loss.weight=[1, 1, 1, 1, 1, 'abc']: entry 6 ('abc') is not a non-negative"),
    ("loss.weight=abc", "loss.weight='abc': expected a list of one weight per class, auto or null"),
    ("loss.weight=[1.0,-2.0]", "loss.weight=[1.0, -2.0]: entry 2 (-2.0)"),
])
def test_a_bad_class_weight_names_the_setting(override, named, compose_cfg):
    cfg = compose_cfg("train", [override])
    with pytest.raises(ValueError) as err:
        check_config_values(cfg)
    assert named in str(err.value)


def test_a_bad_nested_class_weight_names_the_setting(compose_cfg):
    cfg = compose_cfg("train", ["loss=boundary", "loss.region.weight=[1,x]"])
    with pytest.raises(ValueError, match=r"loss\.region\.weight=\[1, 'x'\]: entry 2"):
        check_config_values(cfg)
    check_config_values(compose_cfg("train", ["loss.weight=[1,2.5,0]"]))   # a good list passes
    check_config_values(compose_cfg("train", ["experiment=camvid_enet"]))   # as does auto
