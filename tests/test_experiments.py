"""Paper recipes compose, name their published reference, and build their model and datamodule;
torch.compile and channels_last train on CPU, and a compiled run resumes exactly."""

from __future__ import annotations

import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runs import assert_resume_equals_uninterrupted, metrics, train
from segsuite import catalog
from support.dataset_trees import tree_builder, tree_overrides

EXPERIMENTS = catalog.config_names("experiment")

# what each recipe must set, per recipe (a recipe without an entry fails the first test):
# (dataset, model class, ResNet backbone or None, total batch, iterations or None, lr)
RECIPES = {
    "cityscapes_pspnet_r50": ("cityscapes", "PSPNet", "resnet50", 8, 80000, 0.01),
    "cityscapes_deeplabv3plus_r50": ("cityscapes", "DeepLabV3Plus", "resnet50", 8, 80000, 0.01),
    "cityscapes_deeplabv3plus_r101": ("cityscapes", "DeepLabV3Plus", "resnet101", 8, 80000, 0.01),
    "ade20k_upernet_r50": ("ade20k", "UPerNet", "resnet50", 16, 160000, 0.01),
    "voc_aug_deeplabv3plus_r101": ("voc_aug", "DeepLabV3Plus", "resnet101", 16, 40000, 0.01),
    "camvid_segnet": ("camvid", "SegNet", None, 12, None, 0.1),
    "camvid_enet": ("camvid", "ENet", None, 5, None, 5e-4),
    "camvid_enet_cycle1": ("camvid", "ENet", None, 10, None, 5e-4),
    "camvid_enet_cycle2": ("camvid", "ENet", None, 10, None, 5e-4),
    "camvid_half": ("camvid", "ENet", None, 10, None, 5e-4),
    "camvid_losses_finetune": ("camvid", "ENet", None, 5, None, 1e-4),
    "camvid_losses_scratch": ("camvid", "ENet", None, 10, None, 5e-4),
}


def without_downloads(model_cfg: dict) -> dict:
    """The model config with every ImageNet checkpoint (`pretrained`, the backbone's too) unset."""
    for node in (model_cfg, model_cfg.get("backbone")):
        if isinstance(node, dict) and "pretrained" in node:
            node["pretrained"] = None
    return model_cfg


def test_every_experiment_file_is_a_known_recipe():
    assert EXPERIMENTS == sorted(RECIPES)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds_model_and_datamodule(compose_cfg, name):
    text = (catalog.group_dir("experiment") / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    dataset, model_cls, backbone, batch, steps, lr = RECIPES[name]
    cfg = compose_cfg("train", [f"experiment={name}"])
    if "paper" in cfg.tags:  # a paper's recipe names its published result
        assert re.search(r"[Rr]eference .*mIoU.*\d\d\.\d", text), "the published reference mIoU is missing"
    assert cfg.dataset.name == dataset and cfg.task_name == name
    assert cfg.data.batch_size == batch and cfg.optimizer.lr == pytest.approx(lr)
    if steps is not None:  # iteration-based: validation every N steps across epoch boundaries
        assert cfg.trainer.max_steps == steps and cfg.trainer.max_epochs == -1
        assert cfg.trainer.check_val_every_n_epoch is None and 0 < cfg.trainer.val_check_interval <= steps
        assert cfg.trainer.sync_batchnorm is True
    if backbone is not None:
        assert cfg.model.backbone.name == backbone and str(cfg.model.backbone.pretrained).endswith(".pth")
    datamodule = instantiate(cfg.data, dataset=cfg.dataset, augmentation=cfg.augmentation, _recursive_=False)
    assert datamodule.batch_size == batch
    net = instantiate(without_downloads(OmegaConf.to_container(cfg.model, resolve=True)))  # no download in tests
    assert type(net).__name__ == model_cls and net.num_classes == cfg.dataset.num_classes
    if name == "camvid_segnet":
        net.eval()
        with torch.no_grad():
            assert net(torch.zeros(1, 3, 36, 48)).shape == (1, 11, 36, 48)


@pytest.mark.slow
def test_compile_and_channels_last_train_on_cpu(tmp_path):
    run = tmp_path / "compiled"
    train(run, "module.compile=true", "module.channels_last=true", "trainer.max_epochs=1", "test=false",
          "trainer.precision=32-true")
    assert 0.0 <= metrics(run)["val/mIoU"] <= 1.0
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(k.startswith(("net.", "val_miou_best")) for k in state)   # weights once, uncompiled names


@pytest.mark.slow
def test_a_compiled_run_resumes_like_an_uninterrupted_one(tmp_path):
    """The CamVid ENet recipe trains compiled: an interrupted compiled run resumed with `ckpt_path=`
    ends where the uninterrupted one does (same step, weights, learning rate, per-epoch val mIoU)."""
    assert_resume_equals_uninterrupted(tmp_path, ["module.compile=true", "trainer.precision=32-true"])


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_recipe_trains_a_step(compose_cfg, tmp_path, name):
    """Each `experiment=` recipe, as shipped, runs one training and one validation batch (fast dev run)
    on a miniature tree of its dataset; no ImageNet download (`model.backbone.pretrained=null`), a small crop,
    and a staged recipe starts from the shipped weights of the stage before it."""
    from segsuite.train import train as train_in_process
    from segsuite.zoo import load_entry

    cfg = compose_cfg("train", [f"experiment={name}"])
    root = tree_builder(cfg.dataset.name)(tmp_path / "data")
    overrides = [f"experiment={name}", f"dataset.root={root}", f"paths.output_dir={tmp_path / 'run'}",
                 "dataset.crop_size=[64,64]", "data.batch_size=2", "data.val_batch_size=1", "data.num_workers=0",
                 "debug=fdr", "print_config=false", "logger=csv", *tree_overrides(cfg.dataset.name),
                 "module.compile=false"]   # compiling in-process takes minutes; test_real_camvid.py runs it compiled
    if OmegaConf.is_dict(cfg.model.get("backbone")) and "pretrained" in cfg.model.backbone:
        overrides.append("model.backbone.pretrained=null")
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        overrides.append("trainer=cpu")   # the GPU recipes' own trainer settings stay
    if OmegaConf.is_missing(cfg, "init_from"):
        overrides.append(f"init_from={load_entry('camvid_enet_cycle1').checkpoint}")
    metrics = train_in_process(compose_cfg("train", overrides))
    assert 0.0 <= metrics["val/mIoU"] <= 1.0
