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

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.base import SegmentationModel
from segsuite.models.ops import bilinear_upsampler

STRIDES = (8, 16, 32)


class FCN(SegmentationModel):
    """FCN-`stride`s on a backbone at output stride 32 (paper: VGG16 with fc6/fc7 as convolutions).

    Args:
        num_classes: number of output classes.
        backbone: the encoder. Its last feature (fc7) is scored; FCN-16s/8s also score its
            deepest feature at stride 16 (pool4) and at stride 8 (pool3).
        stride: 32 (FCN-32s, fc7 only), 16 (FCN-16s, + pool4) or 8 (FCN-8s, + pool4 and pool3).
        zero_init_scores: zero-initialise the score layers, as the paper does.
        scale_skips: scale pool4 by 1e-2 and pool3 by 1e-4 before scoring them (the reference
            "at-once" nets; default). False: unscaled skips, for the staged recipe.
        learnable_upsampling: train the bilinear-initialised deconvolutions. False (default, the
            reference nets): they stay fixed bilinear interpolation.
    """

    paper_crop = (500, 500)
    paper_dataset = "VOC"

    def __init__(self, num_classes: int, backbone: Backbone, stride: int = 8, zero_init_scores: bool = True,
                 scale_skips: bool = True, learnable_upsampling: bool = False) -> None:
        super().__init__(num_classes)
        if stride not in STRIDES:
            raise ValueError(f"FCN stride must be one of {STRIDES} (FCN-8s/16s/32s), got {stride}")
        if backbone.output_stride != 32:
            raise ValueError(f"FCN needs a backbone at output stride 32, got {backbone.output_stride}")
        self.stride = stride
        self.size_divisor = 32
        self.pool4_scale = 1e-2 if scale_skips else 1.0
        self.pool3_scale = 1e-4 if scale_skips else 1.0
        self.backbone = backbone
        # Indices of the scored features in the backbone's output: pool3 (stride 8), pool4 (16), top.
        self.taps = {s: backbone.stage_index(s) for s in STRIDES if s >= stride and s < 32}
        self.taps[32] = len(backbone.strides) - 1
        self.score_fr = nn.Conv2d(backbone.channels[-1], num_classes, 1)
        scores = [self.score_fr]
        if stride <= 16:
            self.upscore2 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool4 = nn.Conv2d(backbone.channels[self.taps[16]], num_classes, 1)
            scores.append(self.score_pool4)
        if stride == 8:
            self.upscore_pool4 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool3 = nn.Conv2d(backbone.channels[self.taps[8]], num_classes, 1)
            scores.append(self.score_pool3)
        self.upscore = bilinear_upsampler(num_classes, stride, learnable_upsampling)
        if zero_init_scores:
            for layer in scores:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        score = self.score_fr(features[self.taps[32]])
        if self.stride <= 16:
            score = self.upscore2(score) + self.score_pool4(features[self.taps[16]] * self.pool4_scale)
        if self.stride == 8:
            score = self.upscore_pool4(score) + self.score_pool3(features[self.taps[8]] * self.pool3_scale)
        return self.upscore(score)
