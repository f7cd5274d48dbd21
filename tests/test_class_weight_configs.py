"""One knob weights the classes of any loss: `class_weights` (conf/train.yaml) reaches every loss config's
class-weight slot, a recipe's `class_weights: auto` follows `loss=<any>`, and `auto` is counted on the
run's own checked training split (one datamodule)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from segsuite import build, catalog
from segsuite.preflight import check_config_values

LOSSES = catalog.config_names("loss")
WEIGHTS = [0.5, 1.0, 2.0, 3.5, 1.5, 0.25]   # six classes: the built-in synthetic dataset
SMALL = ["dataset.train.num_images=4", "dataset.val.num_images=2", "dataset.test.num_images=2",
         "dataset.image_size=[32,32]", "dataset.crop_size=[32,32]", "model.base_channels=4", "model.depth=2",
         "data.num_workers=0"]


def class_weight_buffers(loss: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The per-class weight tensors a built loss holds (`weight`, `cross_weight`, also in its terms)."""
    return {name: buffer for name, buffer in loss.named_buffers()
            if name.rsplit(".", 1)[-1] in ("weight", "cross_weight")}


def test_all_fourteen_losses_are_configs():
    assert len(LOSSES) == 14


@pytest.mark.parametrize("name", LOSSES)
def test_class_weights_reach_every_loss(compose_cfg, name):
    cfg = compose_cfg("train", [f"loss={name}", "class_weights=[" + ",".join(map(str, WEIGHTS)) + "]"])
    held = class_weight_buffers(instantiate(cfg.loss))
    assert held, f"loss={name} holds no class weights"
    for where, weights in held.items():
        assert weights.tolist() == pytest.approx(WEIGHTS), where


@pytest.mark.parametrize("name", LOSSES)
def test_no_class_weights_by_default(compose_cfg, name):
    assert class_weight_buffers(instantiate(compose_cfg("train", [f"loss={name}"]).loss)) == {}


@pytest.mark.parametrize("name", LOSSES)
def test_the_camvid_recipe_composes_with_every_loss(compose_cfg, name):
    cfg = compose_cfg("train", ["experiment=camvid_enet", f"loss={name}"])
    assert cfg.class_weights == "auto" and cfg.class_weights_method == "enet"
    assert cfg.loss._target_ == catalog.group_config("loss", name)._target_
    from segsuite.losses.class_weights import has_auto_weights

    assert has_auto_weights(cfg.loss)   # every loss takes the recipe's weights
    check_config_values(cfg)


def test_class_weights_null_makes_the_recipe_plain_ce(compose_cfg):
    cfg = compose_cfg("train", ["experiment=camvid_enet", "class_weights=null"])
    loss = instantiate(cfg.loss)
    assert type(loss).__name__ == "CrossEntropyLoss" and loss.weight is None


def test_a_loss_slot_set_directly_wins(compose_cfg):
    cfg = compose_cfg("train", ["experiment=camvid_enet", "loss.weight=[1,2,3,4,5,6,7,8,9,10,11]"])
    assert instantiate(cfg.loss).weight.tolist() == list(range(1, 12))
    cfg = compose_cfg("train", ["loss=boundary", "class_weights=[1,2,3,4,5,6]", "loss.region.weight=null"])
    assert class_weight_buffers(instantiate(cfg.loss)) == {}


@pytest.mark.parametrize(("override", "named"), [
    ("class_weights=abc", "class_weights='abc': expected a list of one weight per class, auto or null"),
    ("class_weights=[1,-1]", "class_weights=[1, -1]: entry 2 (-1)"),
])
def test_a_bad_class_weights_value_names_the_setting(compose_cfg, override, named):
    with pytest.raises(ValueError) as err:
        check_config_values(compose_cfg("train", [override]))
    assert named in str(err.value)


def test_auto_counts_the_runs_own_checked_train_split(compose_cfg, tmp_path, monkeypatch):
    """class_weights=auto: one datamodule, its train split checked once, its raw split counted; the weights are
    written into the run's config (what the checkpoint records) and the loss's extra targets reach its splits."""
    built, checked = [], []
    make = build.build_datamodule

    def counting(*args, **kwargs):
        datamodule = make(*args, **kwargs)
        built.append(datamodule)
        check = datamodule.check_splits
        datamodule.check_splits = lambda splits, *a, **k: (checked.append(list(splits)), check(splits, *a, **k))[1]
        return datamodule

    monkeypatch.setattr(build, "build_datamodule", counting)
    cfg = compose_cfg("train", [*SMALL, "loss=boundary", "class_weights=auto", f"paths.output_dir={tmp_path}",
                                f"data.cache_dir={tmp_path / 'cache'}"])
    datamodule, module = build.build_components(cfg, check=["val"])
    assert built == [datamodule] and checked == [["val", "train"]]
    weights = list(cfg.class_weights)
    assert len(weights) == 6 and all(w >= 0 for w in weights) and list(cfg.loss.region.weight) == weights
    assert module.criterion.region.weight.tolist() == pytest.approx(weights)
    assert module.run_manifest.config["class_weights"] == weights
    assert datamodule.datasets["train"].target_fn == module.criterion.target_fn  # the same bound method


def test_auto_without_a_train_split_is_refused(compose_cfg):
    with pytest.raises(ValueError, match="train_split"):
        build.build_criterion(compose_cfg("train", ["class_weights=auto"]))
