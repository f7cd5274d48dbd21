"""Every entry of the catalog (each model, loss and dataset config in conf/) has what it must have: a
miniature tree (datasets that read files), its row in README.md's Configuration table, and the tests
that build it, which enumerate the catalog, so a new config is picked up without touching a list."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from segsuite import catalog
from segsuite.utils.paths import config_dir

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
    builder = catalog.tree_builder(name)
    if not catalog.needs_files(name):  # the procedural dataset needs none
        return
    assert builder is not None, f"dataset {name}: no builder in segsuite.testing.dataset_trees.BUILDERS"
    assert Path(builder(tmp_path)).is_dir()


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


def test_the_benchmark_imports_nothing_from_tests():
    sources = (REPO / "src" / "segsuite" / "benchmark").glob("*.py")
    assert not [p.name for p in sources if re.search(r"^\s*(from|import)\s+(tests|conftest|runs)\b",
                                                         p.read_text(), re.MULTILINE)]
