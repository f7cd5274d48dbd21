"""Inference modes: whole, sliding window, flip and multi-scale TTA, against hand-worked cases and invariances."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from segsuite.inference import Inferencer, build_inferencer, window_starts

CONF = Path(__file__).resolve().parents[1] / "conf"


def conv_net(kernel: int, seed: int = 0, symmetric: bool = False, classes: int = 5) -> nn.Module:
    """Two convs (zero padding keeps the size); `symmetric` mirrors the kernels left-right, which makes
    the network commute with horizontal flips."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, kernel, padding=kernel // 2), nn.ReLU(),
                        nn.Conv2d(6, classes, kernel, padding=kernel // 2)).eval()
    if symmetric:
        with torch.no_grad():
            for m in net:
                if isinstance(m, nn.Conv2d):
                    m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return net


def images(n: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("length, window, stride, expected", [
    (10, 4, 3, [0, 3, 6]),        # 6 + 4 = 10: the grid ends flush
    (11, 4, 3, [0, 3, 6, 7]),     # one more window flush with the end
    (3, 4, 2, [0]),               # shorter than the window: one (padded) window
    (8, 8, 8, [0]),
])
def test_window_starts_cover_every_pixel(length, window, stride, expected):
    assert window_starts(length, window, stride) == expected


def test_slide_with_one_window_covering_the_image_equals_whole():
    net, x = conv_net(3), images(2, 20, 28)
    whole = Inferencer()(net, x)
    slide = Inferencer(mode="slide", crop_size=[20, 28], stride=[20, 28])(net, x)
    assert torch.allclose(slide, whole, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(whole, net(x), atol=1e-6)


@pytest.mark.parametrize("crop, stride, window_batch",
                         [([8, 12], [5, 7], 3), ([8, 12], [8, 12], 8), ([7, 9], [1, 2], 64)])
def test_slide_with_overlapping_windows_equals_whole_for_a_pointwise_model(crop, stride, window_batch):
    net, x = conv_net(1), images(2, 19, 30)  # 1x1 convs: translation-equivariant, no border effects
    whole = Inferencer()(net, x)
    slide = Inferencer(mode="slide", crop_size=crop, stride=stride, window_batch=window_batch)(net, x)
    assert slide.shape == whole.shape == (2, 5, 19, 30)
    assert torch.allclose(slide, whole, atol=1e-5)


def test_slide_pads_images_smaller_than_the_window():
    net, x = conv_net(1), images(1, 10, 6)
    slide = Inferencer(mode="slide", crop_size=[16, 16], stride=[8, 8])(net, x)
    assert slide.shape == (1, 5, 10, 6)
    assert torch.allclose(slide, Inferencer()(net, x), atol=1e-5)


class WindowMean(nn.Module):
    """Logits: class 0 = the window's mean of channel 0, everywhere in the window (not translation-equivariant)."""

    def forward(self, x):
        mean = x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])
        return torch.cat([mean, torch.zeros_like(mean)], dim=1)


def test_slide_averages_overlapping_windows_by_count():
    # one row 0,1,2,3,4; windows of width 3, stride 2 -> [0..2] (mean 1) and [2..4] (mean 3);
    # pixel 2 is in both windows: (1 + 3) / 2 = 2.
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = Inferencer(mode="slide", crop_size=[1, 3], stride=[1, 2])(WindowMean(), x)
    assert out[0, 0, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta():
    net, x = conv_net(3, symmetric=True), images(2, 17, 23)
    with torch.no_grad():  # the model really is flip-equivariant
        assert torch.allclose(net(x.flip(-1)).flip(-1), net(x), atol=1e-5)
    plain = Inferencer()(net, x)
    flipped = Inferencer(flip=True)(net, x)
    assert torch.allclose(flipped.softmax(1), plain.softmax(1), atol=1e-6)
    assert torch.equal(flipped.argmax(1), plain.argmax(1))


def test_flip_tta_of_an_asymmetric_model_averages_both_views():
    net, x = conv_net(3, seed=3), images(1, 9, 13)
    with torch.no_grad():
        expected = (net(x).softmax(1) + net(x.flip(-1)).flip(-1).softmax(1)) / 2
    assert torch.allclose(Inferencer(flip=True)(net, x).softmax(1), expected, atol=1e-6)


def test_multiscale_with_scale_one_equals_whole():
    net, x = conv_net(3), images(2, 21, 26)
    assert torch.equal(Inferencer(scales=[1.0])(net, x), Inferencer()(net, x))


class SizeLogit(nn.Module):
    """Logits constant over the image: class 0 = input height / 10, class 1 = 0."""

    def forward(self, x):
        n, _, h, w = x.shape
        return torch.cat([torch.full((n, 1, h, w), h / 10.0), torch.zeros(n, 1, h, w)], dim=1)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_multiscale_averages_probabilities_of_every_scale(mode):
    # scales 0.5 and 1.0 of a 20-pixel-high image: class-0 probability sigmoid(1) and sigmoid(2).
    x = images(1, 20, 12)
    extra = {"crop_size": [40, 40]} if mode == "slide" else {}  # windows larger than the image: padded
    out = Inferencer(mode=mode, scales=[0.5, 1.0], flip=True, **extra)(SizeLogit(), x)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))
    expected = (sigmoid(1.0) + sigmoid(2.0)) / 2 if mode == "whole" else sigmoid(4.0)  # slide: padded to 40
    assert out.shape == (1, 2, 20, 12)
    assert torch.allclose(out.softmax(1)[0, 0], torch.full((20, 12), expected), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "tiles"}, "tta.mode"),
    ({"mode": "slide"}, "tta.crop_size"),
    ({"mode": "slide", "crop_size": [8, 8], "stride": [9, 4]}, "tta.stride"),
    ({"scales": []}, "tta.scales"),
])
def test_bad_settings_fail_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Inferencer(**kwargs)


@pytest.mark.parametrize("name", ["none", "flip", "multiscale", "slide"])
def test_every_tta_config_builds_and_predicts(name):
    cfg = OmegaConf.load(CONF / "tta" / f"{name}.yaml")
    inferencer = build_inferencer(cfg, default_crop_size=[8, 8])
    assert inferencer.mode == cfg.mode and inferencer.flip == cfg.flip and inferencer.scales == list(cfg.scales)
    if name == "slide":
        assert inferencer.crop_size == (8, 8) and inferencer.stride == (6, 6)  # 2/3 of the crop, rounded up
    net, x = conv_net(1), images(1, 16, 20)
    out = inferencer(net, x)
    assert out.shape == (1, 5, 16, 20) and torch.isfinite(out).all()
    if name in ("none", "slide"):  # a pointwise model: one view, windows or not, equals the plain forward
        with torch.no_grad():
            assert torch.allclose(out, net(x), atol=1e-5)


def test_slide_of_a_channels_last_model_equals_its_contiguous_run():
    net, x = conv_net(3), images(2, 19, 30)
    slide = Inferencer(mode="slide", crop_size=[8, 12], stride=[5, 7], window_batch=3)
    reference = slide(net, x)
    net_cl = conv_net(3).to(memory_format=torch.channels_last)
    out = slide(lambda t: net_cl(t.contiguous(memory_format=torch.channels_last)), x)
    assert torch.allclose(out, reference, atol=1e-5)
