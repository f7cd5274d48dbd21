"""One shared test base over every architecture config in conf/model/*.yaml.

Each model is built from its shipped yaml through `hydra.utils.instantiate` (so the configs are
exercised), once with its default settings and, where the yaml's `backbone:` node names a
ResNet, once with a small one (ResNet-18; their default-backbone case runs in the slow suite). Every case
runs the same checks: forward/backward at an odd size, eval with a batch of one, output shape,
auxiliary outputs, finite gradients, state-dict round trip and `torch.jit.trace`. Heavy nets run
at 97x131 in the fast suite; 360x480 is fast only for the light ones (the rest is marked slow).
"""

from __future__ import annotations

import io
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from segsuite.catalog import model_config, model_names
from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel

MODEL_NAMES = model_names()
NUM_CLASSES = 5
ODD_SIZE = (97, 131)
SMALL_ODD_SIZE = (33, 47)  # for the checks that compare two runs (round trip, trace)
PAPER_SIZE = (360, 480)
# Cheap enough for a forward/backward at 360x480 in the fast suite (with their yaml defaults).
LIGHT_MODELS = {"unet_slim", "enet"}
# Overrides (dotted keys) that give a model its small variant; a yaml whose `backbone.name` is a
# ResNet gets ResNet-18 unless listed here. The paper's U-Net (width 64) runs in the slow suite; width 16 here.
SMALL_OVERRIDES: dict[str, dict] = {"unet": {"base_channels": 16}}
SMALL_BACKBONE = "resnet18"


def load_yaml(name: str):
    """conf/model/<name>.yaml as `model=<name>` composes it (its `defaults:` resolved)."""
    return model_config(name)


def small_overrides(name: str) -> dict | None:
    """Overrides for the small-backbone variant of `name`, or None if it has no backbone choice."""
    if name in SMALL_OVERRIDES:
        return SMALL_OVERRIDES[name]
    backbone = load_yaml(name).get("backbone")
    if backbone is not None and backbone.name.startswith("resnet") and backbone.name != SMALL_BACKBONE:
        return {"backbone.name": SMALL_BACKBONE}
    return None


def build_model(
    name: str, overrides: dict | None = None, seed: int = 0, device: str = "cpu"
) -> torch.nn.Module:
    """Instantiate conf/model/<name>.yaml with `dataset.num_classes` resolved; `overrides` keys may
    be dotted (`backbone.name`), as on the command line."""
    cfg = OmegaConf.create({"dataset": {"num_classes": NUM_CLASSES}, "model": load_yaml(name)})
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg.model, key, value, merge=False)
    torch.manual_seed(seed)
    with torch.device(device):
        return hydra.utils.instantiate(cfg.model)


def train_batch_size(model: torch.nn.Module) -> int:
    """Two images where BatchNorm needs more than one value per channel (1x1 pooling bins), else one."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return 2 if has_bn else 1


def expects_aux(name: str, overrides: dict | None) -> bool:
    """A model has auxiliary outputs in training when its config enables `aux_head`."""
    cfg = load_yaml(name)
    return bool((overrides or {}).get("aux_head", cfg.get("aux_head", False)))


# A model that has a small variant runs its default (paper-size) backbone in the slow suite only.
CASES = [
    pytest.param((name, None), id=name, marks=[pytest.mark.slow] if small_overrides(name) else [])
    for name in MODEL_NAMES
]
CASES += [
    pytest.param((name, small_overrides(name)), id=f"{name}-small")
    for name in MODEL_NAMES
    if small_overrides(name) is not None
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CI box has two shared cores; one intra-op thread is faster there than two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    """(name, overrides, model) built once per module for all checks of one configuration."""
    name, overrides = request.param
    return name, overrides, build_model(name, overrides)


def split_output(out):
    """(logits, aux list) from a model output in training mode."""
    if isinstance(out, (tuple, list)):
        logits, aux = out
        return logits, list(aux)
    return out, []


def run_forward_backward(name, overrides, model, size):
    batch = train_batch_size(model)
    model.train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(batch, 3, *size)
    logits, aux = split_output(model(x))
    assert logits.shape == (batch, NUM_CLASSES, *size)
    assert torch.isfinite(logits).all()
    if expects_aux(name, overrides):
        assert aux, f"{name}: aux_head is enabled but training mode returned no auxiliary outputs"
    for a in aux:
        assert a.shape == (batch, NUM_CLASSES, *size)
    target = torch.randint(0, NUM_CLASSES, (batch, *size))
    loss = torch.nn.functional.cross_entropy(logits, target)
    for a in aux:
        loss = loss + 0.4 * torch.nn.functional.cross_entropy(a, target)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: no gradient reached {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable), f"{name}: all gradients are zero"
    model.zero_grad(set_to_none=True)


def test_forward_backward_odd_size(case):
    run_forward_backward(*case, size=ODD_SIZE)


def test_forward_backward_paper_size_light(case):
    name, overrides, model = case
    if name not in LIGHT_MODELS:
        pytest.skip("heavy model: 360x480 runs in the slow suite")
    run_forward_backward(name, overrides, model, size=PAPER_SIZE)


@pytest.mark.slow
def test_forward_backward_paper_size_heavy(case):
    name, overrides, model = case
    if name in LIGHT_MODELS:
        pytest.skip("light model: covered by the fast test")
    run_forward_backward(name, overrides, model, size=PAPER_SIZE)


def test_eval_batch_of_one_returns_plain_logits(case):
    _, _, model = case
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *ODD_SIZE))
    assert isinstance(out, torch.Tensor), "eval mode must return logits only, no auxiliary outputs"
    assert out.shape == (1, NUM_CLASSES, *ODD_SIZE)
    assert torch.isfinite(out).all()


def test_state_dict_round_trip(case):
    name, overrides, model = case
    with torch.no_grad():  # move away from any zero/identity init so the check means something
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    # Built on the meta device (no init cost); every tensor must come from the file.
    clone = build_model(name, overrides, device="meta")
    clone.load_state_dict(torch.load(buffer, weights_only=True), strict=True, assign=True)
    left_on_meta = [n for n, t in [*clone.named_parameters(), *clone.named_buffers()] if t.is_meta]
    assert not left_on_meta, f"{name}: tensors missing from the state dict: {left_on_meta[:5]}"
    model.eval()
    clone.eval()
    x = torch.randn(1, 3, *SMALL_ODD_SIZE)
    with torch.no_grad():
        expected, actual = model(x), clone(x)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(actual, expected)


def test_jit_trace_matches_eager(case):
    _, _, model = case
    model.eval()
    x = torch.randn(1, 3, *SMALL_ODD_SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        expected = model(x)
        actual = traced(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_backbone_answers_its_description(case):
    """A model with an encoder holds it as a `Backbone` whose stage features have the channels and
    strides it states (the description the heads are built from)."""
    _, _, model = case
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        pytest.skip("no backbone")
    assert isinstance(backbone, Backbone)
    size = (64, 96)
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, *size))
    assert len(features) == len(backbone.channels) == len(backbone.strides)
    for f, channels, stride in zip(features, backbone.channels, backbone.strides):
        assert f.shape[1:] == (channels, size[0] // stride, size[1] // stride)
    assert backbone.output_stride == backbone.strides[-1]


def model_class(name: str) -> type:
    return hydra.utils.get_class(load_yaml(name)._target_)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_states_its_paper_setting(name):
    """Each architecture declares its paper's training crop and dataset (read by the catalog)."""
    cls = model_class(name)
    assert issubclass(cls, SegmentationModel)
    crop, dataset = cls.paper_setting()
    assert crop == cls.paper_crop and dataset == cls.paper_dataset
    assert isinstance(crop, tuple) and len(crop) == 2 and all(isinstance(c, int) and c > 0 for c in crop)
    assert isinstance(dataset, str) and dataset


def test_paper_settings_are_the_papers():
    expected = {"deeplabv3plus": ((512, 1024), "Cityscapes"), "pspnet": ((713, 713), "Cityscapes"),
                "upernet": ((512, 512), "ADE20K"), "gcn": ((512, 512), "VOC"), "duc_hdc": ((544, 544), "Cityscapes"),
                "fcn8s": ((500, 500), "VOC"), "segnet": ((360, 480), "CamVid"), "enet": ((512, 1024), "Cityscapes"),
                "unet": ((572, 572), "ISBI")}
    assert {name: model_class(name).paper_setting() for name in expected} == expected


def test_a_model_without_its_paper_setting_fails():
    class Undeclared(SegmentationModel):
        def forward_logits(self, x):
            return x

    class HalfDeclared(SegmentationModel):
        paper_crop = (64, 64)

    with pytest.raises(TypeError, match=r"Undeclared.*'paper_crop', 'paper_dataset'"):
        Undeclared.paper_setting()
    with pytest.raises(TypeError, match=r"HalfDeclared.*\['paper_dataset'\]"):
        HalfDeclared.paper_setting()


def test_every_model_config_is_covered():
    """The glob finds the shipped configs, so a new architecture joins these tests by itself."""
    assert {"fcn8s", "fcn16s", "fcn32s", "segnet", "enet", "unet", "unet_slim"} <= set(MODEL_NAMES)


def test_model_configs_compose_as_hydra_composes_them():
    """`segsuite.catalog.model_config` (used by these tests and the scripts) gives what
    `model=<name>` gives in a Hydra run, `defaults:` lists included; the quick start trains the
    slim U-Net, which is `unet` at width 16 with BatchNorm."""
    from hydra import compose, initialize_config_dir

    from segsuite.utils.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        default = compose("train")
        composed = {name: compose("train", overrides=[f"model={name}"]).model for name in MODEL_NAMES}
    for name in MODEL_NAMES:
        assert OmegaConf.to_container(composed[name]) == OmegaConf.to_container(model_config(name)), name
    assert OmegaConf.to_container(default.model) == OmegaConf.to_container(model_config("unet_slim"))
    slim, paper = OmegaConf.to_container(model_config("unet_slim")), OmegaConf.to_container(model_config("unet"))
    assert {k for k in paper if slim[k] != paper[k]} == {"base_channels", "batch_norm"}
    assert (slim["base_channels"], slim["batch_norm"]) == (16, True)
    assert (paper["base_channels"], paper["batch_norm"], paper["depth"], paper["bilinear"]) == (64, False, 4, False)


def test_model_config_errors_name_the_problem(tmp_path):
    group = tmp_path / "model"
    group.mkdir()
    (group / "a.yaml").write_text("defaults:\n  - b\nx: 1\n")
    (group / "b.yaml").write_text("defaults:\n  - a\n")
    (group / "c.yaml").write_text("defaults:\n  - /dataset/synthetic\n")
    with pytest.raises(FileNotFoundError, match=r"model=nope.*\['a', 'b', 'c'\]"):
        model_config("nope", tmp_path)
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        model_config("a", tmp_path)
    with pytest.raises(ValueError, match="not the name of a model config"):
        model_config("c", tmp_path)


def unet_parameters_by_hand(in_channels: int, classes: int, widths=(64, 128, 256, 512, 1024), batch_norm=False) -> int:
    """U-Net layer by layer: two 3x3 convs per level (bias, or BN's weight + bias instead), 2x2
    max-pool, 2x2 transposed conv halving the channels (bias), concatenated skip, 1x1 classifier."""

    def conv3x3(i, o):
        return i * o * 9 + (2 * o if batch_norm else o)

    def level(i, o):
        return conv3x3(i, o) + conv3x3(o, o)

    encoder = level(in_channels, widths[0]) + sum(level(widths[k], widths[k + 1]) for k in range(len(widths) - 1))
    decoder = sum(widths[k + 1] * widths[k] * 2 * 2 + widths[k] + level(2 * widths[k], widths[k])
                  for k in range(len(widths) - 1))
    return encoder + decoder + widths[0] * classes + classes


def test_unet_config_is_the_papers_network():
    """`model=unet` is Ronneberger et al.'s U-Net: 4 poolings, 64-1024 channels, no BatchNorm,
    2x2 up-convs; 31.0 M parameters at 2 classes (31,030,658 for the paper's one-channel input,
    31,031,810 for RGB)."""
    paper = unet_parameters_by_hand(1, 2)
    assert paper == 31_030_658 and abs(paper - 31.0e6) < 0.05e6
    cfg = OmegaConf.create({"dataset": {"num_classes": 2}, "model": model_config("unet")})
    with torch.device("meta"):
        model = hydra.utils.instantiate(cfg.model)
        grey = hydra.utils.instantiate(cfg.model, in_channels=1)
    assert sum(p.numel() for p in grey.parameters()) == paper
    assert sum(p.numel() for p in model.parameters()) == unet_parameters_by_hand(3, 2) == 31_031_810
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.size_divisor == 16 and len(model.downs) == 4
    assert all(isinstance(up.up, torch.nn.ConvTranspose2d) and up.up.kernel_size == (2, 2) for up in model.ups)
    slim_cfg = OmegaConf.create({"dataset": {"num_classes": 2}, "model": model_config("unet_slim")})
    with torch.device("meta"):
        slim = hydra.utils.instantiate(slim_cfg.model)
    assert sum(p.numel() for p in slim.parameters()) == unet_parameters_by_hand(
        3, 2, widths=(16, 32, 64, 128, 256), batch_norm=True) == 1_942_594


def test_model_zoo_script_measures_configs(tmp_path):
    """scripts/model_zoo.py counts parameters of the shipped configs and writes both tables."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "scripts" / "model_zoo.py"
    spec = importlib.util.spec_from_file_location("model_zoo", path)
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    zoo.main(["--out", str(tmp_path), "--models", "enet", "unet", "unet_slim"])
    rows = json.loads((tmp_path / "model_zoo.json").read_text())["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("enet", "default"),
        ("unet", "default"),
        ("unet_slim", "default"),
    ]
    paper_unet = rows[1]
    assert paper_unet["classes"] == 2 and paper_unet["params"] == unet_parameters_by_hand(3, 2)
    assert paper_unet["ref_params_m"] == 31.0
    # FLOPs of the first 3x3 conv alone at 360x480 (2 per MAC) bound the total from below.
    assert paper_unet["gflops"] > 2 * 360 * 480 * 64 * 3 * 9 / 1e9
    assert rows[2]["params"] < paper_unet["params"] / 10
    assert "| unet |" in (tmp_path / "model_zoo.md").read_text()
