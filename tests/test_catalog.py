"""Every entry of the catalog (each model, loss and dataset config in conf/) has what it must have: a
miniature tree (datasets that read files), its row in README.md's Configuration table, the facts its
class declares, and the tests that build it, which enumerate the catalog, so a new config is picked up
without touching a list. The catalog composes with Hydra's compose API, as a run does."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from segsuite import catalog
from segsuite.utils.paths import config_dir
from support.dataset_trees import tree_builder

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
GROUPS = ["model", "loss", "dataset"]


def on_disk(group: str, conf: Path | None = None) -> list[str]:
    """The group's yaml files, read independently of the catalog."""
    return sorted(p.stem for p in ((conf or config_dir()) / group).glob("*.yaml"))


def readme_names(group: str) -> set[str]:
    """The names in backticks in the second column of README.md's `| `group` |` row."""
    row = next((line for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith(f"| `{group}` |")), None)
    assert row is not None, f"README.md's Configuration table has no `{group}` row"
    return set(re.findall(r"`([A-Za-z0-9_]+)`", row.split("|")[2]))


def load_copy(path: Path, name: str):
    """A fresh copy of the module at `path` (the imported one stays as it is)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("group", GROUPS)
def test_the_catalog_is_what_conf_holds(group):
    assert catalog.config_names(group) == on_disk(group)


@pytest.mark.parametrize("group", GROUPS)
def test_every_entry_has_its_readme_row(group):
    names, listed = set(catalog.config_names(group)), readme_names(group)
    assert not names - listed, f"README.md's `{group}` row misses {sorted(names - listed)}"
    assert not listed - names, f"README.md's `{group}` row lists {sorted(listed - names)}, not in conf/{group}/"


@pytest.mark.parametrize("name", catalog.config_names("dataset"))
def test_every_dataset_that_reads_files_has_a_miniature_tree(name, tmp_path):
    builder = tree_builder(name)
    if not catalog.needs_files(name):  # the procedural dataset needs none
        return
    cls = catalog.config_class("dataset", name)
    assert builder is not None, (f"dataset {name}: no builder of {cls.__qualname__}'s tree in "
                                 "tests/support/dataset_trees.py (`@tree_of(<class>)`)")
    assert Path(builder(tmp_path)).is_dir()


@pytest.mark.parametrize("name", [n for n in catalog.config_names("dataset") if catalog.needs_files(n)])
def test_every_dataset_that_reads_files_declares_its_files(name):
    """The error messages and the fixtures read these from the class: its tree, where to get it, and its
    label files' encoding and raw values (your own data has none of its own: its classes and 255)."""
    cls = catalog.config_class("dataset", name)
    where = f"{cls.__module__}.{cls.__qualname__}"
    assert cls.tree and cls.download, f"{where} declares no `tree` or `download`"
    assert cls.label_encoding in ("png_grey", "png_palette", "mat_S"), f"{where}: label_encoding {cls.label_encoding}"
    values = cls.raw_label_values
    assert (values is None) == catalog.own_data(name), f"{where}: raw_label_values {values}"
    assert values is None or (len(set(values)) == len(values) and all(0 <= v <= 65535 for v in values))


@pytest.mark.parametrize("name", [n for n in catalog.config_names("dataset")
                                  if catalog.needs_files(n) and not catalog.own_data(n)])
def test_every_released_dataset_declares_its_image_size(name):
    """The benchmark and the speed test rewrite the trees at this size."""
    size = catalog.official_image_size(name)
    cls = catalog.config_class("dataset", name)
    assert size is not None, f"{cls.__module__}.{cls.__qualname__} declares no `official_image_size`"
    assert all(v > 0 for v in size)


@pytest.mark.parametrize("name", catalog.model_names())
def test_every_model_declares_its_papers_crop_and_dataset(name):
    cls = catalog.config_class("model", name)
    assert catalog.paper_crop(name) is not None, f"{cls.__qualname__} declares no `paper_crop`"
    assert catalog.paper_dataset(name), f"{cls.__qualname__} declares no `paper_dataset`"


def test_the_config_tests_enumerate_the_catalog():
    """The tests that build every config take their list from the catalog: a new yaml is tested."""
    configs = load_copy(TESTS / "test_configs.py", "catalog_check_configs")
    properties = load_copy(TESTS / "test_losses_properties.py", "catalog_check_losses")
    models = load_copy(TESTS / "test_models.py", "catalog_check_models")
    assert configs.MODELS == models.MODEL_NAMES == on_disk("model")
    assert configs.LOSSES == properties.NAMES == on_disk("loss")
    assert configs.DATASETS == on_disk("dataset")


def test_architectures_are_one_config_per_model_class():
    names = catalog.architectures()
    classes = [catalog.config_class("model", n) for n in names]
    assert len(set(classes)) == len(classes) and set(names) <= set(catalog.model_names())
    assert {catalog.config_class("model", n) for n in catalog.model_names()} == set(classes)


def test_loss_facts_come_from_the_classes():
    for name in catalog.config_names("loss"):
        cls = catalog.loss_class(name)
        assert catalog.loss_needs_maps(name) == hasattr(cls, "target_fn")
        assert catalog.loss_needs_progress(name) == hasattr(cls, "set_progress")
    assert not catalog.loss_zero_at_perfect("boundary")  # L_B is negative at a perfect prediction


def test_a_new_loss_yaml_alone_is_picked_up(tmp_path, monkeypatch):
    """A loss config dropped into conf/loss/ (here in a copy of conf/) is enumerated by the catalog,
    the tests that build and check every loss, and the benchmark, with no list to edit."""
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    (conf / "loss" / "ce_smooth.yaml").write_text((conf / "loss" / "ce.yaml").read_text()
                                                   .replace("label_smoothing: 0.0", "label_smoothing: 0.1"))
    monkeypatch.setattr(catalog, "config_dir", lambda: conf)
    assert "ce_smooth" in catalog.config_names("loss")
    assert catalog.loss_class("ce_smooth").__name__ == "CrossEntropyLoss" and not catalog.loss_needs_maps("ce_smooth")
    assert "ce_smooth" in load_copy(TESTS / "test_configs.py", "catalog_new_configs").LOSSES
    assert "ce_smooth" in load_copy(TESTS / "test_losses_properties.py", "catalog_new_losses").NAMES
    from segsuite.benchmark import cli

    assert "ce_smooth" in cli.parse_args(["--sections", "losses"]).losses
    with pytest.raises(AssertionError, match="ce_smooth"):  # and README.md's row must name it
        names, listed = set(catalog.config_names("loss")), readme_names("loss")
        assert not names - listed, f"README.md's `loss` row misses {sorted(names - listed)}"


def test_the_convergence_matrix_runs_every_architecture():
    script = load_copy(REPO / "scripts" / "convergence_matrix.py", "catalog_convergence_matrix")
    entries = script.model_entries()
    assert list(entries) == catalog.architectures()
    for name, overrides in entries.items():
        if catalog.backbone_family(name) == "resnet":
            assert f"model.{catalog.backbone_key(name)}=resnet18" in overrides


def test_the_package_imports_nothing_from_tests():
    """Nothing under src/ imports test-side code; the benchmark's data section alone loads the miniature
    trees, from the checkout it runs in (`segsuite.benchmark.data.fixture_trees`)."""
    sources = (REPO / "src" / "segsuite").rglob("*.py")
    assert not [p.name for p in sources if re.search(r"^\s*(from|import)\s+(tests|conftest|runs|support)\b",
                                                         p.read_text(), re.MULTILINE)]
    assert not (REPO / "src" / "segsuite" / "testing").exists()
    readers = [p.relative_to(REPO).as_posix() for p in (REPO / "src" / "segsuite").rglob("*.py")
               if "support.dataset_trees" in p.read_text()]
    assert readers == ["src/segsuite/benchmark/data.py"]


def test_group_config_is_what_hydra_composes(compose_cfg):
    """`group_config` gives what `<group>=<name>` gives a run, also for a config that extends another."""
    for group, name in (("dataset", "voc_aug"), ("dataset", "cocostuff164k"), ("model", "unet_slim"), ("loss", "ce")):
        composed = compose_cfg("train", [f"{group}={name}"])
        assert OmegaConf.to_container(catalog.group_config(group, name)) == OmegaConf.to_container(composed[group])
    voc, aug = catalog.group_config("dataset", "voc"), catalog.group_config("dataset", "voc_aug")
    assert aug.train.split == "train_aug" and aug.val == voc.val and aug.name == "voc_aug"


def test_group_config_inside_a_running_hydra_app(compose_cfg):
    """Inside a Hydra app (a command reading a checkpoint) the catalog composes and leaves the app's
    Hydra as it was."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        outer = GlobalHydra.instance().hydra
        catalog._composed_group.cache_clear()
        assert catalog.group_config("model", "unet_slim").base_channels == 16
        assert GlobalHydra.instance().hydra is outer
