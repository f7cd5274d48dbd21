"""Smoke test of `python -m segsuite.benchmark` in its tiny mode: every section runs and the report adds up.

No timing assertions (the machine is shared); the checks are on the structure of the report and
on quantities that follow from the inputs by arithmetic.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from segsuite import catalog
from segsuite.benchmark import cli, data, losses, metrics, models, peak, timing
from support.dataset_trees import datasets_with_trees


def run_harness(argv: list[str]) -> dict:
    """`cli.main(argv)` on one thread, restoring the test process's thread count afterwards."""
    threads = torch.get_num_threads()
    try:
        return cli.main([*argv, "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return run_harness(["--quick", "--models", "unet_slim", "--out", str(out)]), out


def test_quick_run_writes_json_and_markdown(quick_run):
    _results, out = quick_run
    on_disk = json.loads((out / "benchmark.json").read_text())
    assert set(on_disk) >= {"machine", "peak", "models", "data", "losses", "metrics", "loop", "slide", "targets"}
    text = (out / "benchmark.md").read_text()
    assert "| unet_slim |" in text and "| camvid |" in text and "| hausdorff |" in text
    assert on_disk["machine"]["torch"] == torch.__version__


def test_model_row_arithmetic(quick_run):
    results, _ = quick_run
    (row,) = results["models"]
    assert row["model"] == "unet_slim" and row["crop"] == [64, 64]
    # parameter count of the slim U-Net config (the default run's model), built independently
    from segsuite.models.unet import UNet

    slim = UNet(19, base_channels=16, batch_norm=True)
    assert row["params_m"] == pytest.approx(sum(p.numel() for p in slim.parameters()) / 1e6)
    # training costs more than inference: backward is about twice the forward
    assert 2.0 * row["gflops_infer"] < row["gflops_train"] < 4.0 * row["gflops_infer"]
    # fp32 and bf16, each with and without channels_last
    combos = {(v["precision"], v["channels_last"]) for v in row["variants"]}
    assert combos == {("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    for v in row["variants"]:
        assert v["train_ips"] > 0 and v["infer_ips"] > 0
        peak = row["peak"][v["precision"]]
        assert v["train_peak"] == pytest.approx(v["train_ips"] * row["gflops_train"] / peak)


def test_memory_formats_select_the_variants(tmp_path):
    results = run_harness(["--quick", "--models", "unet_slim", "--sections", "models", "--precisions", "fp32",
                                    "--memory-formats", "channels_last", "--out", str(tmp_path)])
    (row,) = results["models"]
    assert [(v["precision"], v["channels_last"], v["compile"]) for v in row["variants"]] == [("fp32", True, False)]
    assert "| unet_slim |" in (tmp_path / "benchmark.md").read_text()


def test_a_failed_compile_is_reported_and_the_run_goes_on(tmp_path, monkeypatch):
    def failing_compile(model, *args, **kwargs):
        raise RuntimeError("inductor gave up\nsecond line")

    monkeypatch.setattr(torch, "compile", failing_compile)
    results = run_harness(["--quick", "--models", "unet_slim", "--sections", "models", "--compile",
                                    "--precisions", "fp32", "bf16", "--memory-formats", "channels_last",
                                    "--out", str(tmp_path)])
    (row,) = results["models"]
    eager = [v for v in row["variants"] if not v["compile"]]
    failed = [v for v in row["variants"] if v["compile"]]
    assert [v["precision"] for v in eager] == ["fp32", "bf16"] and all(v["train_ips"] > 0 for v in eager)
    assert [(v["precision"], v["error"]) for v in failed] == [("fp32", "RuntimeError: inductor gave up"),
                                                              ("bf16", "RuntimeError: inductor gave up")]
    assert (tmp_path / "benchmark.md").read_text().count("| failed: RuntimeError: inductor gave up |") == 2


def test_every_compiled_variant_compiles_from_an_empty_cache(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(torch.compiler, "reset", lambda: events.append("reset"))
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: events.append("compile") or model)
    run_harness(["--quick", "--models", "unet_slim", "--sections", "models", "--compile",
                          "--precisions", "fp32", "bf16", "--memory-formats", "channels_last", "--out", str(tmp_path)])
    assert events == ["reset", "compile", "reset", "compile"]  # nothing left from the variant or model before


def test_flop_count_of_one_convolution():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 10, 10)
    # 2 FLOPs per multiply-add: out pixels * out channels * in channels * k*k
    assert timing.count_flops(lambda: conv(x)) == 2 * 10 * 10 * 8 * 3 * 9


def test_ratios_and_targets(quick_run):
    results, _ = quick_run
    ce = next(r for r in results["losses"]["rows"] if r["loss"] == "ce")
    assert ce["loss_ratio"] == pytest.approx(1.0) and ce["step_ratio"] == pytest.approx(1.0)
    # quick: cross-entropy and every loss that takes precomputed maps (their steps are timed)
    with_maps = {n for n in catalog.config_names("loss") if catalog.loss_needs_maps(n)}
    assert {r["loss"] for r in results["losses"]["rows"]} == {"ce", *with_maps}
    m = results["metrics"]
    assert m["ratio"] == pytest.approx(m["update_ms"] / m["val_step_ms"])
    s = results["slide"]
    # 128x256 image, 64x128 windows, default stride = ceil(2/3 window): 3 x 3 windows
    assert s["stride"] == [math.ceil(2 * 64 / 3), math.ceil(2 * 128 / 3)] and s["windows"] == 9
    loop = results["loop"]
    assert loop["ratio"] == pytest.approx(loop["loop_ips"] / loop["bare_ips"])
    names = " ".join(t["target"] for t in results["targets"])
    for key in ("Lightning loop", "dpce step", "metric update", "slide", "camvid pipeline"):
        assert key in names
    # the slim U-Net's narrow convolutions are memory-bound: measured, reported, held to no target
    assert results["models"][0]["memory_bound"] and results["models"][0]["flops_per_byte"] < models.MIN_INTENSITY
    assert not any("unet_slim train step" in t["target"] for t in results["targets"])


def test_confusion_matrix_forms_agree():
    from segsuite.metrics import confusion_matrix

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 7, 9), generator=g)
    target[0, :2] = 255
    preds = torch.randint(0, 5, (2, 7, 9), generator=g)
    expected = torch.zeros(5, 5, dtype=torch.long)
    for t, p in zip(target.flatten().tolist(), preds.flatten().tolist()):
        if t != 255:
            expected[t, p] += 1
    assert torch.equal(confusion_matrix(preds, target, 5, 255), expected)
    assert torch.equal(metrics.confusion_matrix_reference(preds, target, 5, 255), expected)


def test_the_1x1_convolution_of_the_peak_is_the_same_product():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(5, 7, generator=g)
    out = torch.nn.functional.conv2d(*peak.conv1x1_operands(a, b))
    assert out.shape == (1, 6, 7, 1)  # 7 pixels, 5 -> 6 channels
    torch.testing.assert_close(out.reshape(6, 7), a @ b)


def test_peak_is_the_faster_gemm_path(quick_run):
    results, _ = quick_run
    peak = results["peak"]
    for precision in ("fp32", "bf16"):
        by_path = [peak["paths"][path][precision] for path in ("matmul", "conv1x1")]
        assert min(by_path) > 0 and peak[precision] == max(by_path)


def test_data_rates_alternate_rounds_and_keep_each_ones_best(monkeypatch):
    """On a fake CPU clock: `decode` costs 2 ms per image in round one and 1 ms after, `pipeline`
    the reverse (4 ms, then 5 ms per call of two images). The rounds alternate the two, and each
    keeps its best round: 1000 and 500 images per second."""
    clock = {"t": 0.0, "round": 0}
    monkeypatch.setattr(timing.time, "process_time", lambda: clock["t"])
    calls = []

    def decode(i):
        calls.append("decode")
        clock["t"] += 0.002 if clock["round"] == 0 else 0.001

    def pipeline(i):
        calls.append("pipeline")
        clock["t"] += 0.004 if clock["round"] == 0 else 0.005
        if calls.count("pipeline") == 201:  # the warm-up and 200 timed calls of round one
            clock["round"] = 1

    rates = timing.best_interleaved_rates({"decode": (decode, 1), "pipeline": (pipeline, 2)},
                                           count=3, seconds=1.6, rounds=2)
    assert rates == pytest.approx({"decode": 1000.0, "pipeline": 500.0})
    order = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert order == ["decode", "pipeline", "decode", "pipeline"]


def test_what_is_measured_is_the_catalog():
    """The defaults and the choices of the command line are the catalog's entries, nothing listed here."""
    args = cli.parse_args(["--sections", "losses"])
    assert args.models == catalog.architectures() and set(args.models) <= set(catalog.model_names())
    assert "unet_slim" not in args.models and "fcn16s" not in args.models  # variants of unet and fcn8s
    assert args.losses[0] == "ce" and sorted(args.losses) == catalog.config_names("loss")
    options = {a.dest: a for a in cli.parser()._actions}
    assert list(options["models"].choices) == catalog.model_names()
    assert list(options["losses"].choices) == catalog.config_names("loss")
    assert list(options["datasets"].choices) == datasets_with_trees()  # the tests' miniature trees
    assert data.default_datasets() == [n for n in options["datasets"].choices
                                       if catalog.official_image_size(n) is not None]
    assert losses.default_losses()[0] == "ce"


def test_the_data_section_outside_a_checkout_says_what_to_do(monkeypatch, tmp_path):
    """The miniature trees are test-side code: without a checkout's tests/ the section stops with a message
    (the command line still offers every dataset that reads files)."""
    monkeypatch.setattr(data, "checkout_tests", lambda: tmp_path / "tests")
    assert data.fixture_trees(required=False) is None
    assert data.datasets_with_trees() == [n for n in catalog.config_names("dataset") if catalog.needs_files(n)]
    with pytest.raises(RuntimeError, match=r"tests' miniature dataset trees.*checkout"):
        data.cases(["camvid"])


def test_the_backbone_option_reaches_models_with_a_backbone():
    from segsuite.benchmark.nets import build_model

    resnets = [n for n in catalog.architectures() if catalog.backbone_family(n) == "resnet"]
    assert resnets and all(catalog.takes_backbone(n, "resnet18") for n in resnets)
    net = build_model(resnets[0], 3, "resnet18")
    assert sum(p.numel() for p in net.backbone.parameters()) < 12e6  # ResNet-18's body, not the configured one
    others = [n for n in catalog.architectures() if n not in resnets]
    assert others and not any(catalog.takes_backbone(n, "resnet18") for n in others)  # VGG nets, no backbone


def test_a_model_without_a_paper_crop_is_named(monkeypatch):
    args = cli.parse_args(["--models", "enet", "--sections", "models"])
    monkeypatch.setattr(catalog, "paper_crop", lambda name, conf_dir=None: None)
    with pytest.raises(ValueError, match="enet.*ENet declares no `paper_crop`"):
        models.crop_of("enet", args)


def test_intensity_counts_the_bytes_each_layer_writes():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.ReLU())
    flops, per_byte = models.forward_intensity(net, torch.randn(1, 3, 10, 10))
    assert flops == 2 * 10 * 10 * 8 * 3 * 9
    assert per_byte == pytest.approx(flops / (2 * 8 * 10 * 10 * 4))  # conv and ReLU outputs, fp32
