"""ResNet-18/34/50/101/152 (He et al. 2016) with torchvision's parameter names, for dense prediction.

Every parameter and buffer has torchvision's name and shape (`conv1`, `bn1`, `layer1.0.conv1`,
`layerN.0.downsample.{0,1}`, ...; the stride sits on the 3x3 conv of a bottleneck, "ResNet v1.5"),
so torchvision's ImageNet checkpoints load with strict key matching once their classifier `fc.` is
dropped. The ImageNet classifier itself is not built. Public checkpoints:

- resnet18:  https://download.pytorch.org/models/resnet18-f37072fd.pth
- resnet34:  https://download.pytorch.org/models/resnet34-b627a593.pth
- resnet50:  https://download.pytorch.org/models/resnet50-0676ba61.pth
- resnet101: https://download.pytorch.org/models/resnet101-63fe2227.pth
- resnet152: https://download.pytorch.org/models/resnet152-394f9c45.pth

Dense-prediction options: output stride 8/16/32 by replacing the stride of the last stages with
dilation (torchvision's `replace_stride_with_dilation` semantics: the first block of a dilated stage
keeps the previous rate, the others use the new one), DeepLab multi-grid on the last stage, explicit
per-block dilation cycles (Hybrid Dilated Convolution), `in_channels` other than 3, frozen leading
stages, and BatchNorm kept in eval mode (`norm_eval`) or fully frozen (`frozen_bn`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from segsuite.models.backbones.base import Backbone
from segsuite.models.backbones.pretrained import load_pretrained

# Blocks per stage and block type of each depth (He et al. 2016, Table 1).
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
OUTPUT_STRIDES = (8, 16, 32)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias whose padding keeps the size (up to the stride)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, in_ch: int, width: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride, dilation)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, 1, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided/dilated), 1x1 expand x4, with a shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(
        self, in_ch: int, width: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def stage_dilations(
    blocks: Sequence[int],
    output_stride: int,
    multi_grid: Sequence[int] | None = None,
    layer3_dilations: Sequence[int] | None = None,
    layer4_dilations: Sequence[int] | None = None,
) -> tuple[list[int], list[list[int]]]:
    """Strides of the four stages and the dilation of every block, for a given output stride.

    Stages whose stride is replaced by dilation (layer4 for OS 16, layer3+layer4 for OS 8) multiply
    the running rate by 2; their first block keeps the previous rate (torchvision's semantics).
    `multi_grid` multiplies layer4's rate block by block (DeepLabv3: rate * (1, 2, 4)).
    `layerN_dilations` give the rates of layerN's blocks explicitly, cycled over its blocks (HDC).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"ResNet output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    dilated_from = {32: 4, 16: 3, 8: 2}[output_stride]  # first stage index whose stride becomes dilation
    dilate = [index >= dilated_from for index in range(4)]
    strides, dilations = [], []
    rate = 1
    for index, (n_blocks, dilated) in enumerate(zip(blocks, dilate)):
        stride = 1 if index == 0 else 2
        previous = rate
        if dilated:
            rate *= stride
            stride = 1
        strides.append(stride)
        dilations.append([previous] + [rate] * (n_blocks - 1))
    if multi_grid is not None:
        if not multi_grid or any(int(m) < 1 for m in multi_grid):
            raise ValueError(
                f"ResNet multi_grid must be a list of positive ints such as [1, 2, 4], got {multi_grid}"
            )
        dilations[3] = [rate * int(multi_grid[i % len(multi_grid)]) for i in range(blocks[3])]
    for index, explicit in ((2, layer3_dilations), (3, layer4_dilations)):
        if explicit is None:
            continue
        if strides[index] != 1:
            raise ValueError(
                f"ResNet layer{index + 1}_dilations={list(explicit)} needs layer{index + 1} "
                f"to be dilated: "
                f"use output_stride {8 if index == 2 else '16 or 8'} (got {output_stride})"
            )
        if not explicit or any(int(r) < 1 for r in explicit):
            raise ValueError(f"ResNet layer{index + 1}_dilations must be positive ints, got {explicit}")
        dilations[index] = [int(explicit[i % len(explicit)]) for i in range(blocks[index])]
    return strides, dilations


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn an RGB first-conv weight `[O,3,k,k]` into one for `in_channels` inputs.

    One channel: the sum over RGB (a grey image then gives the RGB response). More channels: the RGB
    filters repeated cyclically and scaled by 3/in_channels, so the expected activation is kept.
    """
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


class ResNet(Backbone):
    """ResNet encoder returning the outputs of its four stages (`layer1`..`layer4`).

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input channels. With a pretrained checkpoint and `in_channels != 3` the RGB
            filters of `conv1` are adapted (see `adapt_first_conv`).
        output_stride: 32 (plain), 16 (layer4 dilated) or 8 (layer3 and layer4 dilated).
        multi_grid: per-block multipliers of layer4's rate (DeepLabv3: [1, 2, 4]); null for none.
        layer3_dilations / layer4_dilations: explicit per-block rates of layer3/layer4, cycled over
            the stage's blocks (Hybrid Dilated Convolution, e.g. [1, 2, 3]); null keeps the rates
            implied by `output_stride`. The stage must be dilated by `output_stride`.
        frozen_stages: leading parts frozen (0 none, 1 stem, 2 stem+layer1, ..., 5 everything);
            frozen parameters get `requires_grad=False` and their BatchNorms stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen, affine trained).
        frozen_bn: freeze every BatchNorm completely (statistics and affine), like torchvision's
            FrozenBatchNorm2d but with BatchNorm2d's state-dict keys.
        pretrained: null, or a local path / URL of a torchvision ResNet checkpoint of this depth, or
            a torchvision weight name (`imagenet`, `IMAGENET1K_V2`, ...; `conf/pretrained/torchvision.yaml`).

    Attributes (the `Backbone` description):
        channels: output channels of the four stages.
        strides: output strides of the four stages (after dilation, e.g. 4, 8, 8, 8 at OS 8).
        dilations: the dilation rate of every block of every stage.
    """

    def __init__(
        self,
        depth: int = 50,
        in_channels: int = 3,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
        layer3_dilations: Sequence[int] | None = None,
        layer4_dilations: Sequence[int] | None = None,
        frozen_stages: int = 0,
        norm_eval: bool = False,
        frozen_bn: bool = False,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if not 0 <= frozen_stages <= 5:
            raise ValueError(
                f"ResNet frozen_stages must be in 0..5 (0 none, 1 stem, ..., 5 all), got {frozen_stages}"
            )
        if in_channels < 1:
            raise ValueError(f"ResNet in_channels must be positive, got {in_channels}")
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval or frozen_bn
        self.frozen_bn = frozen_bn
        stage_strides, self.dilations = stage_dilations(
            blocks, output_stride, multi_grid, layer3_dilations, layer4_dilations
        )

        # Built with 3 input channels first so an RGB checkpoint loads; adapted afterwards.
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for index, (width, stride, rates) in enumerate(zip(STAGE_WIDTHS, stage_strides, self.dilations)):
            out_ch = width * block.expansion
            downsample = None
            if stride != 1 or in_ch != out_ch:
                downsample = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
                )
            layers = [block(in_ch, width, stride, rates[0], downsample)]
            layers += [block(out_ch, width, 1, rate) for rate in rates[1:]]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
            in_ch = out_ch
        self.channels: tuple[int, ...] = tuple(w * block.expansion for w in STAGE_WIDTHS)
        total, strides = 4, []
        for stride in stage_strides:
            total *= stride
            strides.append(total)
        self.strides: tuple[int, ...] = tuple(strides)

        self._init_weights()
        if pretrained:
            load_pretrained(self, pretrained, exclude_prefixes=("fc.",), arch=f"resnet{depth}")
        if in_channels != 3:
            self._set_in_channels(in_channels)
        self._freeze()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _set_in_channels(self, in_channels: int) -> None:
        old = self.conv1
        new = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, device=old.weight.device)
        with torch.no_grad():
            new.weight.copy_(adapt_first_conv(old.weight, in_channels))
        self.conv1 = new

    def stages(self) -> list[nn.Module]:
        """The five freezable parts: stem (conv1+bn1), layer1, layer2, layer3, layer4."""
        stem = nn.ModuleList([self.conv1, self.bn1])
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def _frozen_modules(self) -> list[nn.Module]:
        return self.stages()[: self.frozen_stages]

    def _freeze(self) -> None:
        for part in self._frozen_modules():
            for p in part.parameters():
                p.requires_grad_(False)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """Set train/eval mode, keeping frozen (or `norm_eval`) BatchNorms in eval mode."""
        super().train(mode)
        if not mode:
            return self
        norm_owners = [self] if self.norm_eval else self._frozen_modules()
        for owner in norm_owners:
            for m in owner.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the outputs of layer1..layer4 (channels `self.channels`, strides `self.strides`)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def resnet(name: str, **kwargs) -> ResNet:
    """Build a ResNet from its name ("resnet18" ... "resnet152"); kwargs go to `ResNet`.

    The builder of the model configs' `backbone:` node (`model.backbone.name=resnet18`).
    """
    names = {f"resnet{d}": d for d in DEPTHS}
    if name not in names:
        raise ValueError(f"unknown backbone {name!r}: expected one of {sorted(names, key=names.get)}")
    return ResNet(depth=names[name], **kwargs)
