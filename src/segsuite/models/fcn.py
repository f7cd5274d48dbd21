"""Fully Convolutional Networks (Long, Shelhamer & Darrell 2015): FCN-32s, FCN-16s, FCN-8s.

VGG16 with fc6/fc7 recast as 7x7 and 1x1 convolutions (4096 channels, dropout 0.5), a 1x1 class
scoring layer on fc7, and upsampling by transposed convolutions set to bilinear interpolation.
FCN-16s adds a score layer on pool4 fused (summed) after a 2x upsampling; FCN-8s also adds pool3.

The defaults are the reference nets (shelhamer/fcn.berkeleyvision.org, `voc-fcn8s-atonce`):

- The upsampling deconvolutions are bilinear and fixed (`lr_mult: 0` there): here their weights
  are parameters with `requires_grad=False`, so the optimizer never sees them (no update, no weight
  decay). `learnable_upsampling=True` trains them from the bilinear start instead.
- The skips are trained all at once with pool4 scaled by 1e-2 and pool3 by 1e-4 before their score
  layers (fixed `Scale` layers), which balances their magnitudes with fc7's. The paper's other
  recipe trains in stages, FCN-32s -> 16s -> 8s, each initialised from the previous one, without
  the scaling (`scale_skips=False`).
- The score layers start at zero.

The paper pads the input by 100 pixels and crops the skips by fixed offsets; here the base class
pads the input to a multiple of 32, fc6 is padded by 3 so every map stays an exact 2x of the next,
and the transposed convs are padded by half their stride, which centres each coarse pixel on the
block of fine pixels it covers (the same as cropping by that offset).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from segsuite.models.backbones.vgg import VGG
from segsuite.models.base import SegmentationModel

STRIDES = (8, 16, 32)


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """A `[channels, channels, k, k]` transposed-conv weight that upsamples each channel bilinearly."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


def bilinear_upsampler(channels: int, factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """Transposed conv (kernel 2f, stride f, padding f/2, no bias) set to bilinear x`factor`.

    `learnable=False` freezes the weight (`requires_grad=False`): fixed bilinear interpolation.
    """
    up = nn.ConvTranspose2d(
        channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
    )
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    up.weight.requires_grad_(learnable)
    return up


class FCN(SegmentationModel):
    """FCN-`stride`s on VGG16.

    Args:
        num_classes: number of output classes.
        stride: 32 (FCN-32s, fc7 only), 16 (FCN-16s, + pool4) or 8 (FCN-8s, + pool4 and pool3).
        in_channels: input image channels.
        pretrained: null, or a path/URL of a torchvision VGG16 checkpoint; fc6/fc7 are loaded too.
        frozen_stages: leading VGG stages (0-5) whose parameters are frozen.
        dropout: dropout after fc6 and fc7 (paper: 0.5).
        zero_init_scores: zero-initialise the score layers, as the paper does.
        scale_skips: scale pool4 by 1e-2 and pool3 by 1e-4 before scoring them (the reference
            "at-once" nets; default). False: unscaled skips, for the staged recipe.
        learnable_upsampling: train the bilinear-initialised deconvolutions. False (default, the
            reference nets): they stay fixed bilinear interpolation.
    """

    def __init__(
        self,
        num_classes: int,
        stride: int = 8,
        in_channels: int = 3,
        pretrained: str | os.PathLike | None = None,
        frozen_stages: int = 0,
        dropout: float = 0.5,
        zero_init_scores: bool = True,
        scale_skips: bool = True,
        learnable_upsampling: bool = False,
    ) -> None:
        super().__init__(num_classes)
        if stride not in STRIDES:
            raise ValueError(f"FCN stride must be one of {STRIDES} (FCN-8s/16s/32s), got {stride}")
        self.stride = stride
        self.size_divisor = 32
        self.pool4_scale = 1e-2 if scale_skips else 1.0
        self.pool3_scale = 1e-4 if scale_skips else 1.0
        self.backbone = VGG(
            batch_norm=False,
            in_channels=in_channels,
            fully_conv=True,
            fc_dropout=dropout,
            pretrained=pretrained,
            frozen_stages=frozen_stages,
        )
        self.score_fr = nn.Conv2d(self.backbone.out_channels, num_classes, 1)
        scores = [self.score_fr]
        if stride <= 16:
            self.upscore2 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool4 = nn.Conv2d(self.backbone.stage_channels[3], num_classes, 1)
            scores.append(self.score_pool4)
        if stride == 8:
            self.upscore_pool4 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool3 = nn.Conv2d(self.backbone.stage_channels[2], num_classes, 1)
            scores.append(self.score_pool3)
        self.upscore = bilinear_upsampler(num_classes, stride, learnable_upsampling)
        if zero_init_scores:
            for layer in scores:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        _, _, pool3, pool4, _, fc7 = self.backbone(x)
        score = self.score_fr(fc7)
        if self.stride <= 16:
            score = self.upscore2(score) + self.score_pool4(pool4 * self.pool4_scale)
        if self.stride == 8:
            score = self.upscore_pool4(score) + self.score_pool3(pool3 * self.pool3_scale)
        return self.upscore(score)
