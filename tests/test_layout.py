"""Layout helpers: `relayout` and `NCHWConv2d`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segsuite.models.backbones.resnet import resnet
from segsuite.models.backbones.vgg import vgg16
from segsuite.models.deeplabv3plus import DeepLabV3Plus
from segsuite.models.fcn import FCN
from segsuite.models.nchw import NCHWConv2d
from segsuite.models.pspnet import PSPNet
from segsuite.models.upernet import UPerNet
from segsuite.utils.layout import cat_channels, is_channels_last, memory_format_of, relayout

CL = torch.channels_last
NCHW = torch.contiguous_format


def test_is_channels_last_needs_a_layout_that_differs_from_nchw():
    assert is_channels_last(torch.zeros(2, 3, 4, 5).contiguous(memory_format=CL))
    assert not is_channels_last(torch.zeros(2, 3, 4, 5))
    assert not is_channels_last(torch.zeros(2, 1, 4, 5).contiguous(memory_format=CL))  # both layouts at once
    assert not is_channels_last(torch.zeros(2, 3, 4))


def test_memory_format_of_names_the_layout_to_allocate_like():
    assert memory_format_of(torch.zeros(2, 3, 4, 5).contiguous(memory_format=CL)) == CL
    assert memory_format_of(torch.zeros(2, 3, 4, 5)) == torch.contiguous_format
    assert memory_format_of(torch.zeros(2, 1, 4, 5).contiguous(memory_format=CL)) == torch.contiguous_format


@pytest.mark.parametrize(("source", "target"), [(CL, NCHW), (NCHW, CL), (CL, CL), (NCHW, NCHW)])
def test_relayout_converts_forward_and_returns_the_gradient_in_the_source_layout(source, target):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g).contiguous(memory_format=source).requires_grad_()
    y = relayout(x, target)
    assert torch.equal(y, x) and y.is_contiguous(memory_format=target)
    # a later op whose gradient is in the other layout (here: the weights are laid out that way)
    other = NCHW if source == CL else CL
    w = torch.randn(2, 3, 4, 5, generator=g).contiguous(memory_format=other)
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)
    assert x.grad.is_contiguous(memory_format=source)


def test_relayout_without_grad_is_plain_contiguous():
    x = torch.randn(1, 3, 4, 4)
    assert relayout(x, CL).is_contiguous(memory_format=CL)
    assert relayout(x, NCHW) is x


def _random_conv(dilation: int, g: torch.Generator, memory_format: torch.memory_format = CL) -> NCHWConv2d:
    ours = NCHWConv2d(6, 5, 3, padding=dilation, dilation=dilation, bias=True)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(ours.weight.shape, generator=g))
        ours.bias.copy_(torch.randn(5, generator=g))
    return ours.to(memory_format=memory_format)


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("memory_format", [NCHW, CL])
def test_nchw_conv_computes_the_convolution_in_the_callers_layout(dilation, memory_format):
    """In a network laid out in `memory_format`: output and all gradients equal F.conv2d's on
    NCHW copies, and keep the network's layout."""
    g = torch.Generator().manual_seed(1)
    conv = _random_conv(dilation, g, memory_format)
    x = torch.randn(2, 6, 9, 7, generator=g).contiguous(memory_format=memory_format).requires_grad_()
    out = conv(x)
    assert out.is_contiguous(memory_format=memory_format)
    x_ref = x.detach().contiguous().requires_grad_()
    w_ref = conv.weight.detach().contiguous().requires_grad_()
    b_ref = conv.bias.detach().clone().requires_grad_()
    expected = F.conv2d(x_ref, w_ref, b_ref, padding=dilation, dilation=dilation)
    torch.testing.assert_close(out, expected)
    grad = torch.randn(out.shape, generator=g).contiguous(memory_format=memory_format)
    out.backward(grad)
    expected.backward(grad.contiguous())
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(conv.weight.grad, w_ref.grad)
    torch.testing.assert_close(conv.bias.grad, b_ref.grad)
    assert x.grad.is_contiguous(memory_format=memory_format)
    assert conv.weight.grad.is_contiguous(memory_format=memory_format)  # the parameter's own layout


def test_nchw_conv_runs_in_nchw_only_for_cpu_float32(monkeypatch):
    """In the channels_last fp32 case the kernel sees NCHW tensors; under bf16 autocast it is
    a plain convolution (channels_last, bf16 output)."""
    conv = _random_conv(1, torch.Generator().manual_seed(2))
    x = torch.randn(1, 6, 8, 8).contiguous(memory_format=CL)
    seen = []
    original = torch.nn.Conv2d._conv_forward

    def spy(self, inp, weight, bias):
        seen.append((inp.is_contiguous(), weight.is_contiguous(), inp.dtype))
        return original(self, inp, weight, bias)

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert seen[0] == (True, True, torch.float32)
    assert seen[1][:2] == (False, False)  # channels_last input and weight as given
    assert out.dtype == torch.bfloat16 and is_channels_last(out)


def test_nchw_conv_keeps_nn_conv2d_parameters():
    conv = NCHWConv2d(4, 8, 3, padding=1, bias=False)
    plain = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert list(conv.state_dict()) == list(plain.state_dict())
    conv.load_state_dict(plain.state_dict())  # strict
    assert isinstance(conv, torch.nn.Conv2d)


def test_only_the_measured_wide_convolutions_are_nchw_convs():
    """UPerNet's FPN fuse, PSPNet's bottleneck and FCN's fc6 (where whole steps were faster);
    nothing in the ResNet backbones."""
    models = {
        "upernet": UPerNet(5, resnet("resnet18")),
        "pspnet": PSPNet(5, resnet("resnet18", output_stride=8)),
        "fcn8s": FCN(5, vgg16(fully_conv=True), stride=8),
    }
    found = {name: sorted(n for n, m in model.named_modules() if isinstance(m, NCHWConv2d))
             for name, model in models.items()}
    assert found == {"upernet": ["fuse.0"], "pspnet": ["bottleneck.0"], "fcn8s": ["backbone.classifier.0"]}


def test_cat_channels_keeps_the_reference_layout_with_a_broadcast_part():
    """A part broadcast from a 1x1 map is NCHW; torch.cat alone would return NCHW."""
    like = torch.randn(2, 3, 4, 5).contiguous(memory_format=CL)
    pooled = torch.randn(2, 2, 1, 1).expand(-1, -1, 4, 5)
    assert not is_channels_last(torch.cat([like, pooled], dim=1))
    out = cat_channels([like, pooled], like=like)
    assert is_channels_last(out)
    assert torch.equal(out[:, :3], like) and torch.equal(out[:, 3:], pooled)
    assert cat_channels([like.contiguous(), pooled], like=like.contiguous()).is_contiguous()


@pytest.mark.parametrize("build", [
    lambda: DeepLabV3Plus(5, resnet("resnet18", output_stride=16)),
    lambda: PSPNet(5, resnet("resnet18", output_stride=8)), lambda: UPerNet(5, resnet("resnet18")),
], ids=["deeplabv3plus", "pspnet", "upernet"])
def test_channels_last_networks_stay_channels_last_through_their_pooling_heads(build):
    """Every convolution and BatchNorm of a channels_last network gets a channels_last input
    (a layout break before a wide convolution cost PSPNet two 265 MB copies per step)."""
    model = build().train().to(memory_format=CL)
    broken = []

    def check(module, inputs, output, name):
        t = inputs[0]
        if t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1 and not is_channels_last(t):
            broken.append(name)

    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
            module.register_forward_hook(lambda m, i, o, name=name: check(m, i, o, name))
    model(torch.randn(2, 3, 64, 64).contiguous(memory_format=CL))
    assert broken == []
