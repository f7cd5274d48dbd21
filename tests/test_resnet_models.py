"""ResNet backbones and the ResNet-based architectures (PSPNet, DeepLabv3+, UPerNet, GCN, DUC-HDC).

Checks against independent facts: torchvision's key sheet (names, shapes, parameter counts),
output sizes from the convolution size formula, parameter counts written out layer by layer,
the reference counts/GFLOPs of issue 3, and hand-worked cases for the DUC rearrangement and the
GCN receptive field.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segsuite.catalog import model_config
from segsuite.models.backbones.resnet import ResNet, adapt_first_conv, resnet
from segsuite.models.blocks import PooledConvBNReLU
from segsuite.models.deeplabv3plus import DeepLabV3Plus
from segsuite.models.duc_hdc import DUCHDC, DenseUpsamplingConv
from segsuite.models.gcn import GCN, GlobalConvBlock, RowConv2d
from segsuite.models.pspnet import PSPNet
from segsuite.models.upernet import UPerNet

KEY_SHEET = json.loads((Path(__file__).parent / "data" / "torchvision_keys.json").read_text())["models"]
DEPTHS = (18, 34, 50, 101, 152)
# Issue 3's reference: parameters of torchvision's ResNets without the `fc` classifier.
BACKBONE_PARAMS = {18: 11_176_512, 34: 21_284_672, 50: 23_508_032, 101: 42_500_160, 152: 58_143_808}
ARCHITECTURES = ("pspnet", "deeplabv3plus", "upernet", "gcn", "duc_hdc")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_checkpoint(name: str, path: Path, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict (classifier included) with random values, saved to `path`."""
    state = {}
    for key, shape, dtype in KEY_SHEET[name]["keys"]:
        if dtype == "int64":
            state[key] = torch.randint(0, 1000, shape, generator=generator)
        else:
            state[key] = torch.randn(shape, generator=generator)
    torch.save(state, path)
    return state


def build_from_yaml(name: str, num_classes: int, overrides: dict | None = None) -> nn.Module:
    """conf/model/<name>.yaml instantiated; `overrides` keys are dotted as on the command line."""
    cfg = OmegaConf.create({"dataset": {"num_classes": num_classes}, "model": model_config(name)})
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg.model, key, value, merge=False)
    return hydra.utils.instantiate(cfg.model)


def down(n: int) -> int:
    """Output size of a stride-2 conv/pool whose padding keeps `ceil(n / 2)` (k7p3, k3p1, k1p0)."""
    return (n - 1) // 2 + 1


# --------------------------------------------------------------------------- backbone: weights


@pytest.mark.parametrize("depth", DEPTHS)
def test_torchvision_checkpoint_loads_strictly_and_lands_in_place(depth, tmp_path):
    name = f"resnet{depth}"
    path = tmp_path / f"{name}.pth"
    state = random_checkpoint(name, path, torch.Generator().manual_seed(depth))
    model = resnet(name, pretrained=str(path))
    own = model.state_dict()
    expected = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert set(own) == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key


def test_mismatching_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "bad.pth"
    state = random_checkpoint("resnet18", tmp_path / "good.pth", torch.Generator().manual_seed(0))
    del state["layer2.1.bn1.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, path)
    expected = r"missing keys \['layer2\.1\.bn1\.running_var'\].*unexpected keys \['layer5\.0\.conv1\.weight'\]"
    with pytest.raises(RuntimeError, match=expected):
        resnet("resnet18", pretrained=str(path))


def test_checkpoint_of_another_depth_is_rejected(tmp_path):
    path = tmp_path / "r34.pth"
    random_checkpoint("resnet34", path, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="unexpected keys.*layer1.2.conv1.weight"):
        resnet("resnet18", pretrained=str(path))


def test_dilated_backbone_loads_the_same_checkpoint(tmp_path):
    """Dilation changes no shapes, so ImageNet weights load at every output stride."""
    path = tmp_path / "r50.pth"
    state = random_checkpoint("resnet50", path, torch.Generator().manual_seed(1))
    model = resnet("resnet50", pretrained=str(path), output_stride=8, multi_grid=[1, 2, 4])
    assert torch.equal(model.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resnet("resnet18", pretrained=str(tmp_path / "nope.pth"))


# --------------------------------------------------------------------------- backbone: structure


@pytest.mark.parametrize("depth", DEPTHS)
def test_backbone_parameter_counts_are_exact(depth):
    with torch.device("meta"):
        model = ResNet(depth=depth)
    assert n_params(model) == BACKBONE_PARAMS[depth] == KEY_SHEET[f"resnet{depth}"]["num_params_no_head"]
    sheet = {k: tuple(s) for k, s, _ in KEY_SHEET[f"resnet{depth}"]["keys"] if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == sheet


@pytest.mark.parametrize(
    ("output_stride", "dilated_stages"), [(32, ()), (16, (3,)), (8, (2, 3))]
)
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_output_stride_gives_feature_sizes(output_stride, dilated_stages, size):
    model = resnet("resnet18", output_stride=output_stride).eval()
    h, w = down(down(size[0])), down(down(size[1]))  # conv1 and max-pool
    expected = [(h, w)]
    for stage in (1, 2, 3):
        if stage not in dilated_stages:
            h, w = down(h), down(w)
        expected.append((h, w))
    with torch.no_grad():
        features = model(torch.randn(1, 3, *size))
    assert [tuple(f.shape[-2:]) for f in features] == expected
    assert [f.shape[1] for f in features] == list(model.channels) == [64, 128, 256, 512]
    assert model.strides == {32: (4, 8, 16, 32), 16: (4, 8, 16, 16), 8: (4, 8, 8, 8)}[output_stride]


def test_dilation_follows_torchvision_and_multi_grid():
    def rates(layer):
        return [block.conv2.dilation[0] for block in layer]

    os8 = resnet("resnet50", output_stride=8)
    # replace_stride_with_dilation: a dilated stage's first block keeps the previous rate.
    assert rates(os8.layer3) == [1] + [2] * 5 and rates(os8.layer4) == [2, 4, 4]
    assert os8.layer3[0].conv2.stride == (1, 1) and os8.layer3[0].downsample[0].stride == (1, 1)
    os16 = resnet("resnet50", output_stride=16, multi_grid=[1, 2, 4])
    assert rates(os16.layer3) == [1] * 6 and rates(os16.layer4) == [2, 4, 8]  # rate 2 x (1, 2, 4)
    with pytest.raises(ValueError, match="output_stride"):
        resnet("resnet50", output_stride=4)
    with pytest.raises(ValueError, match="layer3_dilations"):
        resnet("resnet50", output_stride=16, layer3_dilations=[1, 2, 3])


def test_frozen_stages_and_frozen_batchnorm():
    model = resnet("resnet18", frozen_stages=2)  # stem + layer1
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in (model.layer2, model.layer3, model.layer4) for p in m.parameters())
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer1[0].bn1.running_mean, before)
    assert not torch.equal(model.layer2[0].bn1.running_mean, torch.zeros(128))

    frozen_bn = resnet("resnet18", frozen_bn=True).train()
    norms = [m for m in frozen_bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not m.training and not m.weight.requires_grad and not m.bias.requires_grad for m in norms)
    assert all(p.requires_grad for p in frozen_bn.layer4[0].conv1.parameters())
    before = frozen_bn.layer4[1].bn2.running_var.clone()
    frozen_bn(torch.randn(2, 3, 32, 32))
    assert torch.equal(frozen_bn.layer4[1].bn2.running_var, before)

    norm_eval = resnet("resnet18", norm_eval=True).train()
    assert all(not m.training for m in norm_eval.modules() if isinstance(m, nn.BatchNorm2d))
    assert norm_eval.bn1.weight.requires_grad
    with pytest.raises(ValueError, match="frozen_stages"):
        resnet("resnet18", frozen_stages=6)


def test_four_input_channels_with_adapted_pretrained_conv(tmp_path):
    path = tmp_path / "r18.pth"
    state = random_checkpoint("resnet18", path, torch.Generator().manual_seed(2))
    model = resnet("resnet18", in_channels=4, pretrained=str(path)).eval()
    rgb = state["conv1.weight"]
    expected = torch.cat([rgb, rgb[:, :1]], dim=1) * 3 / 4  # R, G, B, R, scaled to keep the mean
    torch.testing.assert_close(model.conv1.weight, expected)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    with torch.no_grad():
        assert model(torch.randn(1, 4, 40, 40))[-1].shape == (1, 512, 2, 2)
    torch.testing.assert_close(adapt_first_conv(rgb, 1), rgb[:, 0:1] + rgb[:, 1:2] + rgb[:, 2:3])
    assert resnet("resnet18", in_channels=4).conv1.weight.shape == (64, 4, 7, 7)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'resnet20'.*resnet18"):
        resnet("resnet20")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DeepLabV3Plus(3, resnet("resnet18")), "output stride 8 or 16, got 32"),
        (lambda: GCN(3, resnet("resnet18", output_stride=16)), r"strides \(4, 8, 16, 32\).*\(4, 8, 16, 16\)"),
    ],
    ids=["deeplab-os32", "gcn-os16"],
)
def test_head_refuses_a_backbone_it_cannot_use(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --------------------------------------------------------------------------- architectures: size


def test_pspnet_parameter_count_layer_by_layer():
    """PSPNet-R50, 21 classes, counted from the paper's layer list (conv weights + BN affine)."""
    classes, top, c3 = 21, 2048, 1024
    ppm = 4 * (top * 512 + 2 * 512)  # four bins, 1x1 conv 2048 -> 512 + BN
    bottleneck = (top + 4 * 512) * 9 * 512 + 2 * 512
    classifier = 512 * classes + classes
    aux = c3 * 9 * 256 + 2 * 256 + 256 * classes + classes
    with torch.device("meta"):
        model = build_from_yaml("pspnet", classes)
    assert n_params(model) == BACKBONE_PARAMS[50] + ppm + bottleneck + classifier + aux
    assert n_params(model.aux_head) == aux


@pytest.mark.parametrize(
    ("name", "classes", "reference", "aux_reference"),
    [("pspnet", 21, 49.0e6, 2.4e6), ("deeplabv3plus", 21, 59.3e6, None), ("upernet", 21, 66.4e6, 2.4e6)],
)
def test_paper_parameter_counts_within_ten_percent(name, classes, reference, aux_reference):
    with torch.device("meta"):
        model = build_from_yaml(name, classes)
    assert abs(n_params(model) - reference) <= 0.1 * reference
    if aux_reference is not None:
        assert abs(n_params(model.aux_head) - aux_reference) <= 0.1 * aux_reference


@pytest.mark.parametrize(("name", "reference"), [("pspnet", 235e9), ("deeplabv3plus", 118e9)])
def test_paper_gflops_within_ten_percent(name, reference):
    """GFLOPs of the main branch at 1x3x360x480 (2 FLOPs per multiply-add), counted on meta tensors."""
    with torch.device("meta"):
        model = build_from_yaml(name, 21).eval()
        x = torch.empty(1, 3, 360, 480)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert abs(counter.get_total_flops() - reference) <= 0.1 * reference


# --------------------------------------------------------------------------- architectures: forward


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_yaml_forward_at_odd_size_with_resnet18(name):
    model = build_from_yaml(name, 3, {"backbone.name": "resnet18"})
    assert isinstance(model.backbone, ResNet)
    model.train()
    out = model(torch.randn(2, 3, 97, 131))
    logits, aux = out if isinstance(out, tuple) else (out, [])
    assert logits.shape == (2, 3, 97, 131)
    assert len(aux) == (1 if name in ("pspnet", "upernet") else 0)
    assert all(a.shape == (2, 3, 97, 131) for a in aux)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PSPNet(3, resnet("resnet18", output_stride=16), bins=[1, 3], aux_head=False),
        lambda: DeepLabV3Plus(3, resnet("resnet18", output_stride=8, multi_grid=[1, 2, 4]), separable=True),
        lambda: UPerNet(3, resnet("resnet18"), channels=32, aux_head=False),
        lambda: UPerNet(3, resnet("resnet18", output_stride=16), channels=32, aux_head=False),
        lambda: GCN(3, resnet("resnet18"), kernel_size=7, channels=8),
        lambda: DUCHDC(3, resnet("resnet18", output_stride=8, layer3_dilations=[1, 2, 3], layer4_dilations=[1, 2]),
                       duc_rates=[1, 2]),
    ],
    ids=["pspnet-os16", "deeplab-os8-sep", "upernet-slim", "upernet-os16", "gcn-k7", "duc-aspp"],
)
def test_architecture_options_forward_and_backward(make):
    model = make().train()
    logits = model(torch.randn(2, 3, 45, 61))
    assert logits.shape == (2, 3, 45, 61)
    logits.square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


def test_eval_mode_skips_the_auxiliary_head():
    model = PSPNet(3, resnet("resnet18", output_stride=8)).eval()
    calls = []
    model.aux_head.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 47))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 33, 47) and not calls


def test_deeplab_aspp_rates_double_at_output_stride_8():
    def rates(model):
        return [branch[0].dilation[0] for branch in model.aspp.branches[1:-1]]

    assert rates(DeepLabV3Plus(3, resnet("resnet18", output_stride=16))) == [6, 12, 18]
    assert rates(DeepLabV3Plus(3, resnet("resnet18", output_stride=8))) == [12, 24, 36]
    separable = DeepLabV3Plus(3, resnet("resnet18", output_stride=16), separable=True)
    depthwise = separable.aspp.branches[1][0]
    assert depthwise.groups == depthwise.in_channels == 512 and depthwise.dilation == (6, 6)


def test_duc_hdc_defaults_are_the_released_network():
    """TuSimple-DUC's ResNet-101-HDC: res4a at rate 2, then 2, 5, 9, 1 repeated over res4b1..b22;
    res5 at 5, 9, 17 (the yaml's backbone node); four summed DUC convs at rates 6/12/18/24 (the
    class's defaults and the yaml's); no dropout."""
    released_res4 = [2] + [[2, 5, 9, 1][i % 4] for i in range(22)]
    with torch.device("meta"):
        yaml_model = build_from_yaml("duc_hdc", 19)
        class_defaults = DUCHDC(19, yaml_model.backbone)
        for model in (yaml_model, class_defaults):
            assert [b.conv2.dilation[0] for b in model.backbone.layer3] == released_res4
            assert [b.conv2.dilation[0] for b in model.backbone.layer4] == [5, 9, 17]
            assert model.backbone.strides == (4, 8, 8, 8)
            assert [(c.dilation[0], c.padding[0]) for c in model.duc.branches] == [(r, r) for r in (6, 12, 18, 24)]
            assert all(c.out_channels == 19 * 8 * 8 and c.bias is not None for c in model.duc.branches)
            assert model.dropout.p == 0.0
    # a shorter list is cycled over the stage's blocks (the paper's plain HDC cycle)
    with torch.device("meta"):
        model = build_from_yaml("duc_hdc", 3, {"backbone.layer3_dilations": [1, 2, 5, 9], "duc_rates": [1]})
    assert [b.conv2.dilation[0] for b in model.backbone.layer3] == [[1, 2, 5, 9][i % 4] for i in range(23)]
    assert len(model.duc.branches) == 1


def test_duc_hdc_parameters_by_hand():
    """ResNet-101-DUC-HDC at 19 classes, counted layer by layer from the released network's list
    (TuSimple-DUC networks/resnet.py + network_duc_hdc.py): 132.2 M. The released ResNet has a deep
    stem (3x3 convs 3->64->64->128, so res2a takes 128 channels); segsuite keeps torchvision's 7x7
    stem for its ImageNet weights, 123,776 parameters fewer."""
    classes = 19

    def conv_bn(i, o, k=1):
        return i * o * k * k + 2 * o  # bias-free conv + BN (gamma, beta)

    def bottleneck(i, width, projection):
        out = 4 * width
        return (conv_bn(i, width) + conv_bn(width, width, 3) + conv_bn(width, out)
                + (conv_bn(i, out) if projection else 0))

    def stages(stem_channels):
        total, channels = 0, stem_channels
        for width, blocks in zip((64, 128, 256, 512), (3, 4, 23, 3)):  # res2..res5 of ResNet-101
            total += bottleneck(channels, width, True) + (blocks - 1) * bottleneck(4 * width, width, False)
            channels = 4 * width
        return total

    duc = 4 * (2048 * 3 * 3 * 64 * classes + 64 * classes)  # four 3x3 convs with bias, rates 6/12/18/24
    released = conv_bn(3, 64, 3) + conv_bn(64, 64, 3) + conv_bn(64, 128, 3) + stages(128) + duc
    segsuite = conv_bn(3, 64, 7) + stages(64) + duc
    assert released - segsuite == 123_776
    assert abs(released - 132.2e6) <= 0.1e6 and abs(segsuite - 132.2e6) <= 0.1e6
    with torch.device("meta"):
        assert n_params(build_from_yaml("duc_hdc", classes)) == segsuite == 132_158_272
        assert n_params(DUCHDC(classes, resnet("resnet101", output_stride=8))) == segsuite  # rates add no parameters


def test_dense_upsampling_conv_rearranges_channels_into_pixels():
    """Output pixel (i*d + a, j*d + b) of class c is conv channel c*d*d + a*d + b at (i, j)."""
    torch.manual_seed(0)
    d, classes = 2, 3
    duc = DenseUpsamplingConv(4, classes, d, rates=[1])
    x = torch.randn(1, 4, 3, 5)
    conv = F.conv2d(x, duc.branches[0].weight, duc.branches[0].bias, padding=1)
    out = duc(x)
    assert out.shape == (1, classes, 6, 10)
    for c in range(classes):
        for a in range(d):
            for b in range(d):
                torch.testing.assert_close(out[0, c, a::d, b::d], conv[0, c * d * d + a * d + b])


def test_gcn_block_covers_a_k_by_k_window():
    """With all-ones weights, an impulse spreads over exactly the k x k square around it (both paths)."""
    block = GlobalConvBlock(1, 1, kernel_size=5)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
    x = torch.zeros(1, 1, 11, 11)
    x[0, 0, 5, 5] = 1.0
    expected = torch.zeros(11, 11)
    expected[3:8, 3:8] = 2.0  # one from each path
    torch.testing.assert_close(block(x)[0, 0], expected)
    with pytest.raises(ValueError, match="odd"):
        GlobalConvBlock(1, 1, kernel_size=4)


def random_gcn_block(in_ch: int, out_ch: int, kernel_size: int, seed: int) -> GlobalConvBlock:
    g = torch.Generator().manual_seed(seed)
    block = GlobalConvBlock(in_ch, out_ch, kernel_size)
    with torch.no_grad():
        for param in block.parameters():
            param.copy_(torch.randn(param.shape, generator=g) / param[0].numel() ** 0.5)
    return block


def gcn_block_by_convolutions(block: GlobalConvBlock, x: torch.Tensor) -> torch.Tensor:
    """The block written as its four padded convolutions, with `F.conv2d` on the module's weights."""
    (l1, l2), (r1, r2) = block.left, block.right
    pad = l1.kernel_size[0] // 2
    left = F.conv2d(F.conv2d(x, l1.weight, l1.bias, padding=(pad, 0)), l2.weight, l2.bias, padding=(0, pad))
    right = F.conv2d(F.conv2d(x, r1.weight, r1.bias, padding=(0, pad)), r2.weight, r2.bias, padding=(pad, 0))
    return left + right


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [(9, 13), (3, 20)], ids=["map-larger-than-k", "taps-off-the-map"])
def test_gcn_block_cpu_path_is_the_four_convolutions(memory_format, size):
    """On the CPU the first convolutions of both paths run as one 1 x 1 convolution plus tap sums;
    output, its layout and every gradient are those of the four plain convolutions. With 3 rows
    and k = 7, the outermost tap on each side of the vertical path falls entirely off the map."""
    g = torch.Generator().manual_seed(1)
    block = random_gcn_block(6, 5, 7, seed=0)
    x = torch.randn(2, 6, *size, generator=g).contiguous(memory_format=memory_format).requires_grad_()
    out = block(x)
    expected = gcn_block_by_convolutions(block, x)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=memory_format)
    grad = torch.randn(out.shape, generator=g)
    inputs = (x, *block.parameters())
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # sums over up to 2 x 9 x 13 terms, other order


def test_gcn_block_cpu_path_counts_the_convolutions_flops():
    """The fused path does the plain convolutions' multiply-adds, no more and no fewer:
    2 * (k * in * out + k * out * out) per output pixel and path, counted by torch's FLOP counter."""
    block, (k, c_in, c_out, h, w) = random_gcn_block(8, 3, 5, seed=2), (5, 8, 3, 10, 12)
    x = torch.randn(1, c_in, h, w)
    counter = FlopCounterMode(display=False)
    with counter:
        block(x)
    assert counter.get_total_flops() == 2 * 2 * (k * c_in * c_out + k * c_out * c_out) * h * w


def test_gcn_block_cpu_path_under_bf16_autocast():
    """bf16 autocast: bf16 scores within bf16 rounding of the float32 convolutions."""
    block = random_gcn_block(32, 19, 15, seed=3)
    x = (torch.randn(2, 32, 24, 20, generator=torch.Generator().manual_seed(4))
         .contiguous(memory_format=torch.channels_last))
    with torch.no_grad():
        expected = gcn_block_by_convolutions(block, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x)
    assert out.dtype == torch.bfloat16
    assert ((out.float() - expected).norm() / expected.norm()).item() < 1e-2


def test_gcn_block_traces_the_plain_convolutions(tmp_path):
    """Tracing (TorchScript, ONNX export) records the plain convolutions, whose shapes follow the
    input; the fused path's tap loop would bake in which taps overlap the traced map (all of them
    at 9 x 11; at 2 rows and k = 5, one on each side falls off). Checked on the saved and reloaded
    trace, as `segsuite.export` ships it."""
    block = random_gcn_block(4, 3, 5, seed=5).eval()
    torch.jit.save(torch.jit.trace(block, torch.randn(1, 4, 9, 11), check_trace=False), tmp_path / "block.pt")
    traced = torch.jit.load(tmp_path / "block.pt")
    for size in [(14, 6), (2, 7)]:
        x = torch.randn(2, 4, *size)
        torch.testing.assert_close(traced(x), gcn_block_by_convolutions(block, x))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_row_conv_is_a_plain_1_by_k_convolution(memory_format):
    """RowConv2d (computed through the transposed k x 1 convolution) gives nn.Conv2d's output, in
    the input's memory format, and its gradients, on a non-square map with an asymmetric kernel;
    its parameters keep the 1 x k shape."""
    g = torch.Generator().manual_seed(0)
    conv = RowConv2d(6, 4, 5)
    assert conv.weight.shape == (4, 6, 1, 5) and conv.padding == (0, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 6, 1, 5, generator=g))
        conv.bias.copy_(torch.randn(4, generator=g))
    x = torch.randn(2, 6, 7, 11, generator=g).contiguous(memory_format=memory_format).requires_grad_()
    out = conv(x)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=(0, 2))
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=memory_format)  # the input's layout, as nn.Conv2d returns
    grad = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad)
    want = torch.autograd.grad(expected, (x, conv.weight, conv.bias), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_architecture_loads_pretrained_backbone(tmp_path):
    path = tmp_path / "r18.pth"
    state = random_checkpoint("resnet18", path, torch.Generator().manual_seed(3))
    model = build_from_yaml(
        "upernet", 3, {"backbone.name": "resnet18", "backbone.pretrained": str(path), "backbone.frozen_stages": 1}
    )
    assert torch.equal(model.backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert not model.backbone.conv1.weight.requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_paper_default_forward_at_paper_size(name):
    """The yaml defaults (ResNet-50/101) at 360x480 in eval mode."""
    model = build_from_yaml(name, 21).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 360, 480))
    assert out.shape == (1, 21, 360, 480) and torch.isfinite(out).all()


def test_pooled_branch_trains_with_a_batch_of_one():
    """A 1x1-pooled BN branch normalises with running statistics when it has one value per channel."""
    torch.manual_seed(0)
    branch = PooledConvBNReLU(4, 3, 1).train()
    conv, bn, _ = branch
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.0, 0.3]))
    x = torch.randn(1, 4, 1, 1)
    y = (conv.weight[:, :, 0, 0] @ x[0, :, 0, 0]).view(1, 3, 1, 1)
    mean, var = bn.running_mean.view(1, 3, 1, 1), bn.running_var.view(1, 3, 1, 1)
    gamma, beta = bn.weight.view(1, 3, 1, 1), bn.bias.view(1, 3, 1, 1)
    expected = torch.relu((y - mean) / torch.sqrt(var + bn.eps) * gamma + beta)
    torch.testing.assert_close(branch(x), expected)
    assert torch.equal(bn.running_mean, torch.tensor([0.5, -1.0, 0.0]))
    branch(torch.randn(2, 4, 1, 1))  # two values per channel: ordinary batch statistics
    assert not torch.equal(bn.running_mean, torch.tensor([0.5, -1.0, 0.0]))
    logits, aux = PSPNet(3, resnet("resnet18", output_stride=8)).train()(torch.randn(1, 3, 33, 47))
    assert logits.shape == aux[0].shape == (1, 3, 33, 47)
