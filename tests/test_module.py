"""SegmentationModule's training step: the batch-of-one constraint of BatchNorm, named."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from runs import train
from segsuite.losses import CrossEntropyLoss
from segsuite.models.unet import UNet
from segsuite.module import SegmentationModule


def module_with(net: nn.Module) -> SegmentationModule:
    return SegmentationModule(net, CrossEntropyLoss(ignore_index=255), functools.partial(torch.optim.SGD),
                              scheduler=None, num_classes=3)


def batch(n: int, size: int) -> dict:
    return {"image": torch.randn(n, 3, size, size), "mask": torch.zeros(n, size, size, dtype=torch.long)}


def test_batch_of_one_at_the_stride_is_a_named_error():
    """U-Net with 2 poolings (stride 4) and BatchNorm, one 4x4 image: its deepest map is 1x1, where
    BatchNorm has one value per channel. The error names the batch, the crop, the stride and the fix."""
    torch.manual_seed(0)
    module = module_with(UNet(3, base_channels=4, depth=2, batch_norm=True)).train()
    with pytest.raises(ValueError) as caught:
        module.training_step(batch(1, 4), 0)
    message = str(caught.value)
    for part in ("1 image per device", "crop 4x4", "output stride is 4", "1x1",
                 "at least 2 images per device", "data.batch_size", "larger than 4x4", "dataset.crop_size"):
        assert part in message, part
    assert "Expected more than 1 value per channel" in str(caught.value.__cause__)
    # two images, or a larger crop, train
    assert module(batch(2, 4)["image"]).shape == (2, 3, 4, 4)
    assert module(batch(1, 8)["image"]).shape == (1, 3, 8, 8)


def test_other_errors_of_the_forward_pass_pass_through():
    class Broken(nn.Module):
        size_divisor = 1

        def forward(self, x):
            raise ValueError("something else")

    with pytest.raises(ValueError, match="^something else$"):
        module_with(Broken()).train().training_step(batch(1, 4), 0)


def test_training_run_with_a_batch_of_one_at_the_stride_fails_naming_it(tmp_path):
    """The same through `python -m segsuite.train` (the slim U-Net at depth 2, 4x4 crops)."""
    proc = train(tmp_path / "run", "data.batch_size=1", "dataset.crop_size=[4,4]", "test=false", check=False)
    assert proc.returncode != 0
    assert "cannot train on 1 image per device at crop 4x4: the model's output stride is 4" in proc.stderr + proc.stdout
