"""VGG16 / VGG16-BN (Simonyan & Zisserman 2015) with torchvision's parameter names.

`features.N.*` follow torchvision's layer numbering exactly, so torchvision's ImageNet checkpoints
load with strict key matching:

- VGG16:    https://download.pytorch.org/models/vgg16-397923af.pth
- VGG16-BN: https://download.pytorch.org/models/vgg16_bn-6c64b313.pth

With `fully_conv=True` the backbone also holds fc6/fc7 as convolutions (FCN, Long et al. 2015):
`classifier.0` is a 7x7 conv 512->4096 and `classifier.3` a 1x1 conv 4096->4096, the same indices
as torchvision's `classifier` Sequential (Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear).
A torchvision checkpoint's Linear weights `[4096, 25088]` / `[4096, 4096]` are reshaped into those
convolutions on load (25088 = 512*7*7 in the (C, kH, kW) order of torchvision's flatten); the
1000-way `classifier.6` is dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.backbones.pretrained import load_pretrained
from segsuite.models.nchw import NCHWConv2d

# Output widths of the 13 convolutions, grouped into the five stages that each end in a 2x2 pool.
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
FC_CHANNELS = 4096


class VGG(Backbone):
    """VGG16 feature extractor returning the five pooled stage outputs (strides 2, 4, 8, 16, 32),
    followed by fc7 (stride 32, 4096 channels) with `fully_conv`.

    Args:
        batch_norm: VGG16-BN (BatchNorm after every convolution) instead of VGG16.
        in_channels: input channels; a pretrained first conv needs 3.
        fully_conv: also build fc6/fc7 as 7x7 / 1x1 convolutions (`classifier.0` / `classifier.3`).
        fc_dropout: dropout after fc6 and fc7 (VGG and FCN: 0.5); only with `fully_conv`.
        pretrained: null, a local path / URL of a torchvision-format checkpoint, or a torchvision
            weight name (`imagenet`; `conf/pretrained/torchvision.yaml`).
        frozen_stages: number of leading stages (0-5) whose parameters are frozen; frozen
            BatchNorm layers also stay in eval mode.

    Attributes (the `Backbone` description):
        channels: channels of pool1..pool5 (64, 128, 256, 512, 512), then 4096 for fc7.
        strides: 2, 4, 8, 16, 32, then 32 for fc7.
    """

    def __init__(
        self,
        batch_norm: bool = False,
        in_channels: int = 3,
        fully_conv: bool = False,
        fc_dropout: float = 0.5,
        pretrained: str | os.PathLike | None = None,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= frozen_stages <= len(VGG16_STAGES):
            raise ValueError(f"VGG frozen_stages must be in 0..5, got {frozen_stages}")
        self.batch_norm = batch_norm
        self.fully_conv = fully_conv
        self.frozen_stages = frozen_stages
        pools = tuple(stage[-1] for stage in VGG16_STAGES)
        self.channels: tuple[int, ...] = pools + ((FC_CHANNELS,) if fully_conv else ())
        self.strides: tuple[int, ...] = tuple(2 ** (i + 1) for i in range(len(pools)))
        self.strides += self.strides[-1:] if fully_conv else ()
        layers: list[nn.Module] = []
        self.stage_bounds: list[tuple[int, int]] = []  # [start, end) of each stage's convs in `features`
        channels = in_channels
        for widths in VGG16_STAGES:
            start = len(layers)
            for width in widths:
                layers.append(nn.Conv2d(channels, width, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
            self.stage_bounds.append((start, len(layers)))
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        if fully_conv:
            # padding=3 keeps fc6's output at the pool5 size, so no 100-pixel input padding is needed.
            self.classifier = nn.Sequential(
                NCHWConv2d(channels, FC_CHANNELS, 7, padding=3),  # oneDNN's fp32 NHWC 7x7 is slow on the CPU
                nn.ReLU(inplace=True),
                nn.Dropout(fc_dropout),
                nn.Conv2d(FC_CHANNELS, FC_CHANNELS, 1),
                nn.ReLU(inplace=True),
                nn.Dropout(fc_dropout),
            )
        self._init_weights()
        if pretrained:
            load_vgg_pretrained(self, pretrained)
        self._freeze()

    def stage(self, index: int) -> nn.Sequential:
        """The convolutions (+BN, ReLU) of stage `index` (0-4), without its closing max-pool."""
        start, end = self.stage_bounds[index]
        return self.features[start:end]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages == 0:
            return []
        end = self.stage_bounds[self.frozen_stages - 1][1]
        return list(self.features[:end])

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> VGG:
        """Set train/eval mode, keeping the BatchNorms of frozen stages in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return [pool1, ..., pool5] (strides 2..32), followed by fc7 when `fully_conv`."""
        outputs = []
        for start, end in self.stage_bounds:
            x = self.features[end](self.features[start:end](x))
            outputs.append(x)
        if self.fully_conv:
            outputs.append(self.classifier(x))
        return outputs


def vgg(name: str, **kwargs) -> VGG:
    """Build a VGG from its name ("vgg16" or "vgg16_bn"); kwargs go to `VGG`.

    The builder of the model configs' `backbone:` node (`model.backbone.name=vgg16_bn`).
    """
    builders = {"vgg16": vgg16, "vgg16_bn": vgg16_bn}
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}: expected one of {sorted(builders)}")
    return builders[name](**kwargs)


def vgg16(**kwargs) -> VGG:
    """VGG16 (14,714,688 parameters in `features`)."""
    return VGG(batch_norm=False, **kwargs)


def vgg16_bn(**kwargs) -> VGG:
    """VGG16-BN (14,723,136 parameters in `features`)."""
    return VGG(batch_norm=True, **kwargs)


def _fc_to_conv(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], path: Path | str
                ) -> dict[str, torch.Tensor]:
    """Reshape torchvision's Linear fc6/fc7 weights into the convolution shapes of `own`."""
    state = dict(state)
    for key in ("classifier.0.weight", "classifier.3.weight"):
        if key not in state:
            raise RuntimeError(
                f"checkpoint {path} has no {key}: fully_conv VGG (FCN) needs torchvision's fc6/fc7 "
                f"weights; use a full torchvision VGG16 checkpoint (vgg16-397923af.pth)."
            )
        if state[key].ndim == 2:
            if state[key].numel() != own[key].numel():
                raise RuntimeError(
                    f"checkpoint {path}: {key} has shape {tuple(state[key].shape)}, which cannot be "
                    f"reshaped to the convolution {tuple(own[key].shape)}"
                )
            state[key] = state[key].reshape(own[key].shape)
    return state


def load_vgg_pretrained(model: VGG, path_or_url: str | os.PathLike) -> None:
    """Load a torchvision VGG checkpoint strictly (the 1000-way `classifier.6` excluded).

    Without `fully_conv` all of `classifier.` is excluded; with it, fc6/fc7 are converted to
    convolutions and must be present. `path_or_url` may name torchvision's weights (`imagenet`).
    """
    arch = "vgg16_bn" if model.batch_norm else "vgg16"
    if model.fully_conv:
        load_pretrained(model, path_or_url, exclude_prefixes=("classifier.6.",), convert=_fc_to_conv, arch=arch)
    else:
        load_pretrained(model, path_or_url, exclude_prefixes=("classifier.",), arch=arch)
