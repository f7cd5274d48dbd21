"""The built-in dataset, the pipelines, samplers and SegDataModule."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segsuite.data.datamodule import SegDataModule
from segsuite.data.datasets import DatasetError, SyntheticShapes
from segsuite.data.datasets.synthetic import _REACH, SHAPES, _box, _shape_mask
from segsuite.data.samplers import SeededTrainSampler, ShardedEvalSampler
from segsuite.data.workers import auto_num_workers


def test_synthetic_is_deterministic_per_seed_split_and_index():
    a = SyntheticShapes(num_images=4, seed=3)
    b = SyntheticShapes(num_images=4, seed=3)
    assert np.array_equal(a[2]["image"], b[2]["image"]) and np.array_equal(a[2]["mask"], b[2]["mask"])
    assert not np.array_equal(a[1]["image"], a[2]["image"])
    assert not np.array_equal(a[0]["image"], SyntheticShapes(num_images=4, seed=4)[0]["image"])
    assert not np.array_equal(a[0]["image"], SyntheticShapes(split="val", num_images=4, seed=3)[0]["image"])


def test_preloaded_synthetic_serves_the_rendered_images_as_copies():
    rendered = SyntheticShapes(num_images=5, image_size=(40, 56), num_classes=31, seed=7)
    preloaded = SyntheticShapes(num_images=5, image_size=(40, 56), num_classes=31, seed=7, preload=True)
    for i in range(5):
        a, b = rendered[i], preloaded[i]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
        assert b["mask"].dtype == np.int64 and b["name"] == a["name"]
    # a caller that writes into a sample does not change the stored one
    item = preloaded[2]
    item["image"][:] = 0
    item["mask"][:] = 0
    assert np.array_equal(preloaded[2]["image"], rendered[2]["image"])
    assert np.array_equal(preloaded[2]["mask"], rendered[2]["mask"])
    with pytest.raises(IndexError, match="index 5 out of range"):
        preloaded.load(5)


@pytest.mark.parametrize("shape", SHAPES)
def test_synthetic_shapes_fit_the_box_they_are_drawn_in(shape):
    """Objects are rendered only within `_REACH` radii of their centre: no shape may reach further
    (checked on the full grid, at every rotation, against the box the renderer uses)."""
    h, w, radius = 90, 120, 20.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for angle in np.linspace(0, 2 * np.pi, 37):
        for cy, cx in [(45.3, 60.7), (2.2, 118.9), (88.0, 0.4)]:
            c, s = np.cos(angle), np.sin(angle)
            dy, dx = (yy - cy) / radius, (xx - cx) / radius
            inside = _shape_mask(shape, c * dx + s * dy, -s * dx + c * dy)
            outside_box = np.ones((h, w), bool)
            outside_box[_box(cy, cx, _REACH * radius, h, w)] = False
            assert inside.any() and not (inside & outside_box).any(), (shape, angle, cy, cx)


def test_synthetic_item_contract_and_options():
    ds = SyntheticShapes(num_images=20, image_size=(40, 56), num_classes=9,
                         class_names=[f"c{i}" for i in range(9)], palette=[[i, i, i] for i in range(9)])
    item = ds[0]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (40, 56, 3)
    assert item["mask"].dtype == np.int64 and item["mask"].shape == (40, 56)
    assert ds.classes[3] == "c3" and ds.palette.shape == (9, 3)
    seen = np.unique(np.concatenate([ds[i]["mask"].ravel() for i in range(20)]))
    assert seen.min() == 0 and seen.max() <= 8 and len(seen) >= 6  # background + many classes


def test_synthetic_classes_differ_in_shape_colour_and_texture():
    from segsuite.data.datasets.synthetic import class_recipe

    recipes = [class_recipe(k) for k in range(1, 12)]
    assert len(set(recipes)) == len(recipes)
    # no single cue identifies a class: each cue value is shared by several classes
    for cue in range(3):
        values = [r[cue] for r in recipes]
        assert len(set(values)) < len(values)


def test_synthetic_rejects_bad_options():
    with pytest.raises(ValueError, match="class_names"):
        SyntheticShapes(num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(split="training")


def _augmentation(compose_cfg, crop):
    cfg = compose_cfg("train", [f"dataset.crop_size=[{crop},{crop}]"])
    return cfg


def test_train_pipeline_pads_masks_with_ignore_and_images_with_zero(compose_cfg):
    cfg = compose_cfg("train", ["dataset.crop_size=[300,300]", "dataset.image_size=[64,64]"])
    train_tf = instantiate(cfg.augmentation.train)
    ds = SyntheticShapes(num_images=2, image_size=(64, 64))
    raw = ds[0]
    out = train_tf(image=raw["image"], mask=raw["mask"])
    mask = out["mask"]
    assert mask.shape == (300, 300)
    # the scaled image is at most 128 px: most of the crop is padding, labelled ignore
    assert (mask == 255).mean() > 0.5
    assert set(np.unique(mask)) <= set(range(6)) | {255}
    # padded image pixels are 0 before normalisation: (0 - mean) / std
    mean, std = np.array(cfg.dataset.mean), np.array(cfg.dataset.std)
    padded = out["image"][mask == 255]
    assert np.allclose(padded, (0 - mean) / std, atol=1e-5)


def test_val_pipeline_keeps_full_images(compose_cfg):
    cfg = compose_cfg("train")
    ds = SyntheticShapes(num_images=1, image_size=(50, 70), transform=instantiate(cfg.augmentation.val))
    item = ds[0]
    assert item["image"].shape == (3, 50, 70) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (50, 70) and item["mask"].dtype == torch.int64
    raw = SyntheticShapes(num_images=1, image_size=(50, 70))[0]
    assert torch.equal(item["mask"], torch.from_numpy(raw["mask"]))
    expected = (raw["image"] / 255.0 - np.array(cfg.dataset.mean)) / np.array(cfg.dataset.std)
    assert np.allclose(item["image"].numpy().transpose(1, 2, 0), expected, atol=1e-5)


def test_same_sample_seed_gives_same_augmentation(compose_cfg):
    cfg = compose_cfg("train", ["dataset.crop_size=[64,64]"])
    ds = SyntheticShapes(num_images=3, transform=instantiate(cfg.augmentation.train))
    a, b, c = ds[(1, 123)], ds[(1, 123)], ds[(1, 124)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


def test_train_sampler_depends_only_on_seed_and_epoch_and_shards_disjointly():
    s = SeededTrainSampler(10, seed=1)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(3)
    assert list(s) != first
    s.set_epoch(2)
    assert list(s) == first
    r0 = SeededTrainSampler(11, seed=1, num_replicas=2, rank=0)
    r1 = SeededTrainSampler(11, seed=1, num_replicas=2, rank=1)
    i0, i1 = [i for i, _ in r0], [i for i, _ in r1]
    assert len(i0) == len(i1) == 5 and not set(i0) & set(i1)


def test_eval_sampler_sees_every_sample_exactly_once():
    shards = [list(ShardedEvalSampler(7, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))


def test_per_device_batch_must_divide(compose_cfg):
    cfg = compose_cfg("train")
    dm = instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)

    class FakeTrainer:
        world_size, global_rank = 4, 0

    dm.trainer = FakeTrainer()
    assert dm.per_device_batch(16) == 4
    with pytest.raises(ValueError, match="multiple of 4"):
        dm.per_device_batch(10)


def test_datamodule_builds_loaders(compose_cfg):
    cfg = compose_cfg("train", ["dataset.train.num_images=8", "dataset.val.num_images=5", "data.batch_size=4",
                                "data.num_workers=0"])
    dm = instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)
    assert isinstance(dm, SegDataModule)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 128, 128) and batch["mask"].shape == (4, 128, 128)
    assert len(batch["name"]) == 4
    val = list(dm.val_dataloader())
    assert sum(b["image"].shape[0] for b in val) == 5  # the odd tail is kept, nothing dropped
    assert dm.class_names[0] == "background" and dm.palette.shape == (6, 3)


@pytest.mark.parametrize("processes, cores, expected", [
    (1, 2, 1),    # this 2-core machine: one worker beside the training process
    (1, 16, 8),   # one GPU on a 16-core host: capped at 8
    (8, 64, 7),   # eight GPUs on 64 cores: 8 cores each, one kept by each process
    (4, 20, 4),
    (2, 2, 1),    # never fewer than one worker
    (1, 1, 1),
])
def test_auto_num_workers_shares_the_cores_among_the_processes(processes, cores, expected):
    assert auto_num_workers(processes, cores=cores) == expected


def test_auto_num_workers_sizes_the_loaders_to_the_trainer_and_the_affinity(compose_cfg, monkeypatch):
    import pytorch_lightning as pl

    from segsuite.data import workers

    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    cfg = compose_cfg("train", ["dataset.train.num_images=8", "dataset.val.num_images=4", "data.batch_size=4"])
    assert cfg.data.num_workers == "auto"  # the shipped default
    dm = instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)
    assert dm.num_workers == 7  # no trainer: one process, 8 usable cores
    dm.trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)  # not launched
    assert dm.num_workers == 3  # 8 cores / 2 processes, one each for the process itself
    loader = dm.train_dataloader()
    assert loader.num_workers == 3 and loader.persistent_workers and loader.batch_size == 2


@pytest.mark.parametrize("bad", [-1, "many", 1.5, True])
def test_bad_num_workers_are_refused_with_the_key_name(compose_cfg, bad):
    cfg = compose_cfg("train")
    with pytest.raises(ValueError, match="data.num_workers"):
        SegDataModule(cfg.dataset, cfg.augmentation, num_workers=bad)


def test_bad_labels_name_the_sample():
    class Broken(SyntheticShapes):
        def load(self, index):
            image, mask, name = super().load(index)
            mask[0, 0] = 40
            return image, mask, name

    with pytest.raises(DatasetError, match=r"train_000000.*\[40\]"):
        Broken(num_images=2)[0]
    ds = Broken(num_images=2, skip_bad=True)
    with pytest.warns(UserWarning, match=r"train_000000.*\[40\]"):
        item = ds[0]   # skip_bad: the sample says it is bad (collate drops it), no other one stands in
    assert "train_000000" in item["skipped"] and "[40]" in item["skipped"] and "image" not in item


def test_missing_split_in_config_is_named(compose_cfg):
    cfg = compose_cfg("train")
    dataset = OmegaConf.merge(cfg.dataset, {"test": None})
    dm = SegDataModule(dataset, cfg.augmentation)
    with pytest.raises(KeyError, match="no 'test' split"):
        dm.build_dataset("test")


def test_collate_pads_images_masks_and_maps_but_not_vectors():
    from segsuite.data.collate import collate

    items = [
        {"image": torch.ones(3, 2, 3), "mask": torch.zeros(2, 3, dtype=torch.long), "maps": torch.ones(4, 2, 3),
         "ids": torch.arange(4), "name": "a"},
        {"image": torch.ones(3, 4, 2), "mask": torch.ones(4, 2, dtype=torch.long), "maps": torch.ones(4, 4, 2),
         "ids": torch.arange(4), "name": "b"},
    ]
    batch = collate(items, ignore_index=255)
    assert batch["image"].shape == (2, 3, 4, 3) and batch["maps"].shape == (2, 4, 4, 3)
    assert batch["mask"][0, 2:].eq(255).all() and batch["mask"][1, :, 2:].eq(255).all()
    assert batch["mask"][0, :2].eq(0).all() and batch["image"][0, :, 2:].eq(0).all()
    assert batch["ids"].shape == (2, 4) and batch["name"] == ["a", "b"]


def test_per_sample_seeds_draw_each_transform_independently():
    # With one generator per transform and the same seed for all (Compose.set_random_seed), both
    # flips would be decided by the same first draw: always both or neither.
    import albumentations as A

    class Gradient(SyntheticShapes):
        def load(self, index):
            image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
            return image, np.zeros((8, 8), dtype=np.int64), str(index)

    ds = Gradient(num_images=1, transform=A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]),
                  uint8_output=True)
    image = ds.load(0)[0].transpose(2, 0, 1)
    outcomes = []
    for seed in range(200):
        out = ds[(0, seed)]["image"].numpy()
        h = np.array_equal(out, image[:, :, ::-1]) or np.array_equal(out, image[:, ::-1, ::-1])
        v = np.array_equal(out, image[:, ::-1, :]) or np.array_equal(out, image[:, ::-1, ::-1])
        outcomes.append((h, v))
        assert np.array_equal(out, ds[(0, seed)]["image"].numpy())  # still a pure function of the seed
    assert set(outcomes) == {(False, False), (False, True), (True, False), (True, True)}
    agree = sum(h == v for h, v in outcomes) / len(outcomes)
    assert 0.35 < agree < 0.65
