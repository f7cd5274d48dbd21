"""The assembly layer (segsuite.build), the run manifest, the launcher glue and the entry points' shape."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from segsuite.build import build_components
from segsuite.deploy.exportable import ExportableMaxUnpool2x, exportable
from segsuite.manifest import MANIFEST_KEY, RunManifest
from segsuite.models.ops import MaxUnpool2x
from segsuite.preflight import splits_used

SRC = Path(__file__).resolve().parents[1] / "src" / "segsuite"
ENTRY_POINTS = ["train", "evaluate", "predict", "export"]
SMALL = ["dataset.train.num_images=4", "dataset.val.num_images=2", "dataset.test.num_images=2",
         "dataset.image_size=[32,32]", "dataset.crop_size=[32,32]", "model.base_channels=4", "model.depth=2",
         "data.num_workers=0"]


@pytest.mark.parametrize("loss", ["boundary", "hausdorff", "dpce"])
def test_the_loss_extra_targets_are_computed_by_the_datasets(compose_cfg, tmp_path, loss):
    """The distance maps a loss asks for come from the dataset (the data workers), for every split
    the run checks before training, not from the loss's fallback in the training process."""
    cfg = compose_cfg("train", [*SMALL, f"loss={loss}", f"paths.output_dir={tmp_path}"])
    datamodule, module = build_components(cfg, check=splits_used(cfg))
    datamodule.setup("fit")
    item = datamodule.datasets["train"][0]
    expected = module.criterion.target_fn(item["mask"].numpy())
    assert set(expected) and set(expected) <= set(item)
    for key, value in expected.items():
        assert torch.equal(torch.as_tensor(item[key]), torch.as_tensor(value)), key


def test_the_manifest_holds_what_evaluate_and_predict_read(compose_cfg, tmp_path):
    cfg = compose_cfg("train", [*SMALL, f"paths.output_dir={tmp_path}"])
    datamodule, module = build_components(cfg)
    manifest = module.run_manifest
    assert manifest.class_names == datamodule.class_names and len(manifest.class_names) == cfg.dataset.num_classes
    assert manifest.num_classes == cfg.dataset.num_classes == len(manifest.palette)
    assert manifest.mean == list(cfg.dataset.mean) and manifest.std == list(cfg.dataset.std)
    assert manifest.config["model"]["_target_"] == cfg.model._target_
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    stored = torch.load(_saved(checkpoint, tmp_path), weights_only=True)
    assert RunManifest.from_checkpoint(stored) == manifest
    assert set(stored[MANIFEST_KEY]) == set(RunManifest.__dataclass_fields__)


def _saved(obj: dict, tmp_path: Path) -> Path:
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    return path


class _Unpooler(nn.Module):
    """A network that holds max-unpooling under another attribute name, nested."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.ModuleDict({"up": MaxUnpool2x()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, indices = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
        return self.inner["up"](pooled, indices)


def test_exportable_swaps_every_max_unpooling_module_whatever_it_is_called():
    net = _Unpooler()
    swapped = exportable(net)
    assert not any(type(m) is MaxUnpool2x for m in swapped.modules())
    assert any(isinstance(m, ExportableMaxUnpool2x) for m in swapped.modules())
    assert any(type(m) is MaxUnpool2x for m in net.modules()), "the original network is left as it was"
    x = torch.randn(2, 3, 8, 10)
    assert torch.equal(swapped(x), net(x))


def test_lightning_still_builds_ddp_child_commands_through_the_hook_segsuite_replaces():
    """Fails when Lightning renames or stops calling the private hook that
    `segsuite.launch.use_job_command_for_ddp_children` replaces."""
    import importlib

    from segsuite.launch import LIGHTNING_DDP_HOOK, ddp_child_command, use_job_command_for_ddp_children

    module_name, attribute = LIGHTNING_DDP_HOOK
    launcher = importlib.import_module(module_name)
    original = getattr(launcher, attribute)
    assert list(inspect.signature(original).parameters) == ["local_rank"]
    assert f"{attribute}(local_rank" in inspect.getsource(launcher._SubprocessScriptLauncher._call_children_scripts)
    try:
        use_job_command_for_ddp_children()
        assert getattr(launcher, attribute) is ddp_child_command
    finally:
        setattr(launcher, attribute, original)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_are_thin(name):
    """An entry point is a task function and its Hydra wrapper: at most ~80 lines, and it sets no
    attribute on an object it did not define."""
    source = (SRC / f"{name}.py").read_text()
    assert len(source.splitlines()) <= 80, f"segsuite/{name}.py has {len(source.splitlines())} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            assert not any(isinstance(t, ast.Attribute) for t in targets), \
                f"segsuite/{name}.py line {node.lineno} sets an attribute"


def test_nothing_scans_sys_modules_or_patches_lightning_outside_the_launch_adapter():
    for path in SRC.rglob("*.py"):
        source = path.read_text()
        assert not any(f"sys.modules.{how}" in source for how in ("items", "values", "keys")), path
        if path.name != "launch.py":
            assert "_hydra_subprocess_cmd" not in source, path


OLD_LAYOUT = {  # model configs as checkpoints stored them before the `backbone:` node (flat encoder keys)
    "deeplabv3plus": {"_target_": "segsuite.models.deeplabv3plus.DeepLabV3Plus", "num_classes": 5,
                      "backbone": "resnet18", "pretrained": None, "output_stride": 8, "aspp_rates": [6, 12, 18],
                      "multi_grid": [1, 2, 4], "aspp_channels": 16, "low_level_channels": 8, "separable": False,
                      "dropout": 0.1, "in_channels": 3, "frozen_stages": 0, "norm_eval": False, "frozen_bn": False},
    "segnet": {"_target_": "segsuite.models.segnet.SegNet", "num_classes": 5, "in_channels": 3, "pretrained": None,
               "frozen_stages": 2},
}
TODAY = {
    "deeplabv3plus": ["model.backbone.name=resnet18", "model.backbone.output_stride=8",
                      "model.backbone.multi_grid=[1,2,4]", "model.aspp_channels=16", "model.low_level_channels=8"],
    "segnet": ["model.backbone.frozen_stages=2"],
}


@pytest.mark.parametrize("name", sorted(OLD_LAYOUT))
def test_checkpoints_of_the_flat_backbone_layout_still_load(compose_cfg, name):
    """A checkpoint whose stored model config predates the `backbone:` node rebuilds the same network."""
    from hydra.utils import instantiate

    from segsuite.checkpoint import build_net

    cfg = compose_cfg("train", [f"model={name}", "dataset.num_classes=5", *TODAY[name]])
    torch.manual_seed(0)
    today = instantiate(cfg.model).eval()
    ckpt = {"state_dict": {f"net.{k}": v for k, v in today.state_dict().items()},
            MANIFEST_KEY: {"config": {"model": OLD_LAYOUT[name]}, "num_classes": 5, "class_names": list("abcde"),
                           "palette": [[0, 0, 0]] * 5, "mean": [0.5] * 3, "std": [0.5] * 3, "ignore_index": 255}}
    rebuilt = build_net(ckpt).eval()
    assert [p.requires_grad for p in rebuilt.parameters()] == [p.requires_grad for p in today.parameters()]
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), today(x))


def test_evaluation_feeds_the_stored_loss_its_extra_targets(compose_cfg, tmp_path):
    """`segsuite.evaluate` scores the validation loss with the maps computed by the datasets, as training did."""
    from segsuite.build import build_evaluation

    cfg = compose_cfg("train", [*SMALL, "loss=boundary", f"paths.output_dir={tmp_path}"])
    _, module = build_components(cfg)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    datamodule, evaluated = build_evaluation(compose_cfg("evaluate", ["ckpt_path=unused", "num_workers=0"]), ckpt)
    datamodule.setup("validate")
    item = datamodule.datasets["val"][0]
    assert {"boundary_maps", "boundary_classes"} <= set(item)
    assert evaluated.run_manifest == module.run_manifest
