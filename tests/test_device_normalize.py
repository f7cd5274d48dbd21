"""`data.normalize_on_device`: workers ship uint8, the datamodule normalises after the transfer,
and the batches the model sees equal those of the worker-normalised pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.data.transforms import DeviceNormalize, split_off_normalize

SMALL = ["dataset.train.num_images=6", "dataset.val.num_images=3", "data.batch_size=2", "data.num_workers=0",
         "dataset.crop_size=[48,48]", "dataset.image_size=[64,64]"]


def datamodule(compose_cfg, *overrides):
    cfg = compose_cfg("train", [*SMALL, *overrides])
    return cfg, instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)


def test_device_normalize_is_the_normalize_formula():
    pixels = torch.tensor([0, 64, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out = DeviceNormalize(mean, std, 255.0)(pixels)
    expected = [(0 / 255 - 0.485) / 0.229, (64 / 255 - 0.456) / 0.224, (255 / 255 - 0.406) / 0.225]
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    assert torch.allclose(out[:, :, 0, 0], torch.tensor(expected).expand(2, 3), atol=1e-6)


def test_device_normalize_names_a_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        DeviceNormalize([0.5] * 3, [0.2] * 3)(torch.zeros(1, 4, 2, 2, dtype=torch.uint8))


def test_device_normalize_takes_one_value_for_every_channel_or_one_per_channel():
    pixels = torch.full((1, 4, 1, 1), 51, dtype=torch.uint8)  # 51 / 255 = 0.2
    assert torch.allclose(DeviceNormalize([0.1], [0.5])(pixels), torch.full((1, 4, 1, 1), 0.2), atol=1e-6)
    out = DeviceNormalize([0.1, 0.2, 0.0, 0.2], [0.5, 1.0, 0.2, 0.1])(pixels)
    assert torch.allclose(out.flatten(), torch.tensor([0.2, 0.0, 1.0, 0.0]), atol=1e-6)


def test_split_off_normalize_moves_only_a_final_standard_normalize(compose_cfg):
    cfg = compose_cfg("train")
    stripped, normalize = split_off_normalize(cfg.augmentation.train)
    assert [t._target_ for t in stripped.transforms] == [t._target_ for t in cfg.augmentation.train.transforms[:-1]]
    assert normalize == DeviceNormalize(list(cfg.dataset.mean), list(cfg.dataset.std), 255.0)
    assert len(cfg.augmentation.train.transforms) == len(stripped.transforms) + 1  # the config node is unchanged
    min_max = OmegaConf.create({"_target_": "albumentations.Compose", "transforms": [
        {"_target_": "albumentations.Normalize", "normalization": "min_max"}]})
    assert split_off_normalize(min_max)[1] is None
    not_last = OmegaConf.create({"_target_": "albumentations.Compose", "transforms": [
        {"_target_": "albumentations.Normalize"}, {"_target_": "albumentations.HorizontalFlip"}]})
    assert split_off_normalize(not_last)[1] is None


@pytest.mark.parametrize("loader", ["train_dataloader", "val_dataloader"])
def test_uint8_batches_normalised_on_device_equal_the_worker_normalised_ones(compose_cfg, loader):
    _, on_device = datamodule(compose_cfg)
    _, in_worker = datamodule(compose_cfg, "data.normalize_on_device=false")
    shipped = next(iter(getattr(on_device, loader)()))
    reference = next(iter(getattr(in_worker, loader)()))
    assert shipped["image"].dtype == torch.uint8 and shipped["mask"].dtype == torch.uint8
    assert reference["image"].dtype == torch.float32 and reference["mask"].dtype == torch.int64
    model_input = on_device.on_after_batch_transfer(shipped, 0)
    assert model_input["image"].dtype == torch.float32 and model_input["mask"].dtype == torch.int64
    assert torch.allclose(model_input["image"], reference["image"], atol=1e-5)
    assert torch.equal(model_input["mask"], reference["mask"])
    assert shipped["name"] == reference["name"]


def test_the_dataset_contract_is_unchanged_outside_the_datamodule(compose_cfg):
    cfg, dm = datamodule(compose_cfg)
    dataset = instantiate(cfg.dataset.train, transform=instantiate(cfg.augmentation.train))
    item = dataset[(0, 5)]
    assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.int64
    dm.setup("fit")
    shipped = dm.datasets["train"][(0, 5)]
    assert torch.allclose(dm.device_normalize(shipped["image"][None])[0], item["image"], atol=1e-5)


def test_different_normalisations_per_split_are_refused(compose_cfg):
    _, dm = datamodule(compose_cfg, "augmentation.val.transforms.0.mean=[0.1,0.1,0.1]")
    with pytest.raises(ValueError, match="augmentation.val"):
        dm.setup("fit")


def test_uint8_images_never_reach_the_model(compose_cfg, tmp_path):
    from segsuite.build import build_components

    cfg = compose_cfg("train", [*SMALL, "model.base_channels=4", "model.depth=2", f"paths.output_dir={tmp_path}"])
    _, module = build_components(cfg)
    with pytest.raises(TypeError, match="datamodule"):
        module(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_padding_of_uint8_batches_stays_black_and_ignored():
    from segsuite.data.collate import collate

    small = {"image": torch.full((3, 2, 2), 9, dtype=torch.uint8), "mask": torch.zeros(2, 2, dtype=torch.uint8),
             "name": "a"}
    large = {"image": torch.full((3, 3, 4), 9, dtype=torch.uint8), "mask": torch.ones(3, 4, dtype=torch.uint8),
             "name": "b"}
    batch = collate([small, large])
    assert batch["image"].dtype == torch.uint8 and batch["image"][0, :, 2:, :].eq(0).all()
    assert batch["mask"][0, 2:, :].eq(255).all() and batch["mask"][0, :2, 2:].eq(255).all()
    assert np.array_equal(batch["mask"][1].numpy(), np.ones((3, 4)))
