"""Export entry point: `python -m segsuite.export ckpt_path=... format=onnx|torchscript [output=...]`.

The exported graph maps a normalised image batch `image [N,3,H,W]` (float32) to `logits [N,C,H,W]`;
ONNX has dynamic batch, height and width. The model's own padding to its stride is traced with
dynamic sizes, so the trace input must not be a multiple of the stride (checked). After writing,
the file is loaded (onnxruntime / `torch.jit.load`) and compared with PyTorch at every
`check_sizes` entry; the largest absolute logit difference is printed and the command fails above
`tolerance`. Class names, palette and normalisation travel in the file's metadata.

Max-pooling with indices (SegNet, ENet) is the one discontinuous step: where two values of a
pooling window are equal up to rounding, onnxruntime (whose convolutions round differently) may
pick the other one, and max-unpooling then puts that value one pixel away, which changes the logits
around it by up to 0.3 (seen with random weights; a randomly initialised SegNet had such a window
on one input in six). So the ONNX check reads the runtime's pooling indices too, verifies that
wherever they differ from PyTorch's the runtime's choice is also a maximum of its window in
PyTorch's own values (within `tie_tolerance`, relative), and compares the logits with PyTorch run
on the runtime's indices, still at `tolerance`. An index that is not a maximum fails the check.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from segsuite.checkpoint import build_net, describe, load_checkpoint
from segsuite.utils.config import check_required
from segsuite.utils.paths import config_dir

log = logging.getLogger("segsuite.export")
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def metadata(ckpt: dict[str, Any]) -> dict[str, str]:
    """What a deployment needs besides the graph: classes, colours, normalisation, architecture."""
    info = ckpt["segsuite"]
    return {
        "architecture": str(info["config"]["model"].get("_target_")),
        "num_classes": str(info["num_classes"]),
        "class_names": json.dumps(info["class_names"]),
        "palette": json.dumps(info["palette"]),
        "mean": json.dumps(info["mean"]),  # 0-1 units: x = (rgb / 255 - mean) / std
        "std": json.dumps(info["std"]),
        "input": "image float32 [N,3,H,W] RGB, (rgb/255 - mean)/std; output logits float32 [N,C,H,W]",
    }


# -- export-friendly equivalents of two ops the tracer cannot record with dynamic sizes -----------------
class ExportableAdaptiveAvgPool2d(nn.Module):
    """`nn.AdaptiveAvgPool2d(bins)` from prefix sums, so the bin edges follow the traced input size.

    ONNX has no adaptive pooling with an output other than 1x1; PyTorch's bin i over a side of n
    spans [floor(i*n/b), ceil((i+1)*n/b)). Box sums are separable: rows first, then columns.
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        self.output_size = tuple(int(v) for v in size)

    @staticmethod
    def _pool(x: torch.Tensor, bins: int, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        prefix = torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.cumsum(dim)], dim=dim)
        i = torch.arange(bins, device=x.device)
        start = torch.div(i * n, bins, rounding_mode="floor")
        end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
        sums = prefix.index_select(dim, end) - prefix.index_select(dim, start)
        shape = [1] * x.dim()
        shape[dim] = bins
        return sums / (end - start).to(x.dtype).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self._pool(self._pool(x.double(), self.output_size[0], x.dim() - 2), self.output_size[1], x.dim() - 1)
        return pooled.to(x.dtype)


def exportable_max_unpool2x(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Max-unpool by 2 (2x2, stride 2) as a scatter into zeros whose size follows the traced input."""
    zeros = F.interpolate(torch.zeros_like(x), scale_factor=2.0, mode="nearest")
    out = zeros.flatten(2).scatter(2, indices.flatten(2), x.flatten(2))
    return out.reshape(zeros.shape)


@contextlib.contextmanager
def exportable(net: nn.Module) -> Iterator[nn.Module]:
    """A copy of `net` with adaptive pooling (bins > 1) and max-unpooling swapped for exportable
    equivalents (the swap of `max_unpool2x` lasts while the context is open)."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                setattr(parent, name, ExportableAdaptiveAvgPool2d(child.output_size))
    patched = [(module, module.max_unpool2x) for name, module in list(sys.modules.items())
               if name.startswith("segsuite.models") and callable(getattr(module, "max_unpool2x", None))]
    try:
        for module, _ in patched:
            module.max_unpool2x = exportable_max_unpool2x
        yield net
    finally:
        for module, original in patched:
            module.max_unpool2x = original


def trace_input(net: nn.Module, size: Sequence[int]) -> torch.Tensor:
    """A random input of `size`; raises if both sides are multiples of the model's padding stride
    (the trace would then record "no padding" and fail at other sizes)."""
    divisor = int(getattr(net, "size_divisor", 1))
    height, width = (int(v) for v in size)
    if divisor > 1 and height % divisor == 0 and width % divisor == 0:
        raise ValueError(f"sample_size={[height, width]}: both sides are multiples of the model's stride "
                         f"{divisor}, so its internal padding would not be traced; pick e.g. "
                         f"{[height + 1, width + 1]}")
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))


def export_onnx(net: nn.Module, sample: torch.Tensor, path: Path, opset: int, meta: dict[str, str]) -> None:
    """TorchScript-based ONNX export with dynamic batch/height/width; metadata stored as metadata_props."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape arithmetic (verified below)
        torch.onnx.export(
            net, (sample,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
            output_names=["logits"], do_constant_folding=True,
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                          "logits": {0: "batch", 2: "height", 3: "width"}},
        )
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(model, str(path))


def export_torchscript(net: nn.Module, sample: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    """Trace the model and save it with the metadata as an extra file `segsuite.json`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, sample, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"segsuite.json": json.dumps(meta)})


def onnx_pool_index_outputs(model) -> list[str]:
    """Names of the indices of every max-pool with indices in an exported ONNX graph, in graph order.

    torch's exporter writes `max_pool2d(..., return_indices=True)` as a MaxPool with two outputs
    plus a 1x1 MaxPool of the same input from which it derives per-plane indices; the 1x1 helpers
    are left out. The graph order is the trace order, i.e. the order of PyTorch's calls.
    """
    names = []
    for node in model.graph.node:
        if node.op_type != "MaxPool" or len(node.output) < 2 or not node.output[1]:
            continue
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
        if any(k != 1 for k in kernel):
            names.append(node.output[1])
    return names


def exported_runner(fmt: str, path: Path):
    """A callable numpy image batch -> (numpy logits, pooling indices or None) running the exported file.

    ONNX also returns the indices of its max-pools with indices (ONNX's flat indices over the whole
    input tensor, one array per pool in call order); TorchScript runs PyTorch's own pooling kernels
    on PyTorch's own values and returns None.
    """
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path))
        pools = onnx_pool_index_outputs(model)
        for name in pools:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

        def run_onnx(x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray] | None]:
            logits, *indices = session.run(["logits", *pools], {"image": x})
            return logits, (indices if pools else None)

        return run_onnx
    loaded = torch.jit.load(str(path), map_location="cpu")
    loaded.eval()

    def run(x: np.ndarray) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy(), None

    return run


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


@contextlib.contextmanager
def pooling_indices_from(runtime_indices: Sequence[np.ndarray], tie_tolerance: float) -> Iterator[list[int]]:
    """Run PyTorch's max-pools with indices on the exported runtime's indices (in call order).

    Each runtime index that differs from PyTorch's must point inside the same window at a value
    within `tie_tolerance * max(1, |window max|)` of the window's maximum in PyTorch's own input to
    the pool, i.e. a near-tie that rounding may resolve either way; otherwise AssertionError. Yields
    a list that receives the number of windows resolved differently, per pool.
    """
    original = F.max_pool2d
    pending = list(runtime_indices)
    resolved: list[int] = []

    def max_pool2d(x, *args, **kwargs):
        with_indices = kwargs.get("return_indices", args[5] if len(args) > 5 else False)
        if not with_indices:
            return original(x, *args, **kwargs)
        out, own = original(x, *args, **kwargs)
        number = len(resolved) + 1
        if not pending:
            raise AssertionError(f"PyTorch ran max-pool #{number} with indices, the exported graph has only "
                                 f"{number - 1}")
        height, width = x.shape[-2:]
        theirs = torch.from_numpy(np.asarray(pending.pop(0))).to(own.device) % (height * width)
        if theirs.shape != own.shape:
            raise AssertionError(f"max-pool #{number}: the exported graph's indices have shape "
                                 f"{tuple(theirs.shape)}, PyTorch's {tuple(own.shape)}")
        differ = theirs != own
        if differ.any():
            names = ("kernel_size", "stride", "padding")
            given = dict(zip(names, args[:3]), **{k: v for k, v in kwargs.items() if k in names})
            kernel = _pair(given["kernel_size"])
            stride = _pair(given.get("stride") or kernel)
            padding = _pair(given.get("padding", 0))
            rows = torch.arange(own.shape[-2], device=own.device).view(-1, 1) * stride[0] - padding[0]
            cols = torch.arange(own.shape[-1], device=own.device).view(1, -1) * stride[1] - padding[1]
            row, col = theirs // width, theirs % width
            inside = (row >= rows) & (row < rows + kernel[0]) & (col >= cols) & (col < cols + kernel[1])
            flat = x.detach().flatten(2)
            best = flat.gather(2, own.flatten(2)).view_as(own)
            chosen = flat.gather(2, theirs.flatten(2)).view_as(own)
            gap = (best - chosen).abs()
            near_tie = inside & (gap <= tie_tolerance * best.abs().clamp_min(1.0))
            bad = differ & ~near_tie
            if bad.any():
                raise AssertionError(
                    f"max-pool #{number}: the exported model picked {int(bad.sum())} index(es) that are not a "
                    f"maximum of their window in PyTorch (largest gap {float(gap[bad].max()):.3e}, "
                    f"tie_tolerance={tie_tolerance}): the exported pooling differs, not a tie")
        resolved.append(int(differ.sum()))
        return out, theirs

    F.max_pool2d = max_pool2d
    try:
        yield resolved
        if pending:
            raise AssertionError(f"the exported graph has {len(resolved) + len(pending)} max-pools with indices, "
                                 f"PyTorch ran {len(resolved)}")
    finally:
        F.max_pool2d = original


def compare_input(net: nn.Module, runner, x: torch.Tensor, tie_tolerance: float = 1e-4) -> dict[str, Any]:
    """Exported vs PyTorch logits for one input batch `x`.

    Where the runner reports its pooling indices, PyTorch runs on them (see `pooling_indices_from`).
    Returns `max_abs_diff` (the number checked against the tolerance), `tied_windows` (max-pool
    windows the runtime resolved the other way) and `max_abs_diff_own_indices` (the difference with
    PyTorch's own indices, which such windows move).
    """
    got, indices = runner(x.numpy())
    with torch.no_grad():
        own = net(x).numpy()
        if indices is None:
            expected, tied = own, 0
        else:
            with pooling_indices_from(indices, tie_tolerance) as resolved:
                expected = net(x).numpy()
            tied = sum(resolved)
    if got.shape != expected.shape:
        raise AssertionError(f"exported model returned {got.shape} for input {tuple(x.shape)}; "
                             f"PyTorch returned {expected.shape}")
    return {"max_abs_diff": float(np.abs(got - expected).max()), "tied_windows": tied,
            "max_abs_diff_own_indices": float(np.abs(got - own).max())}


def compare(net: nn.Module, runner, sizes: Sequence[Sequence[int]],
            tie_tolerance: float = 1e-4) -> list[dict[str, Any]]:
    """`compare_input` on a random input of each `[N, H, W]` in `sizes`; each result also has `size`."""
    results = []
    generator = torch.Generator().manual_seed(1)
    for n, h, w in sizes:
        x = torch.randn(int(n), 3, int(h), int(w), generator=generator)
        results.append({"size": (int(n), int(h), int(w)), **compare_input(net, runner, x, tie_tolerance)})
    return results


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export `cfg.ckpt_path` as `cfg.format`, verify it; return the path and per-size differences."""
    check_required(cfg)
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}: expected one of {sorted(FORMATS)}")
    output = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / f"model{FORMATS[cfg.format]}"
    if output.exists() and not cfg.overwrite:
        raise FileExistsError(f"output={output} already exists; pass overwrite=true to replace it")
    ckpt = load_checkpoint(cfg.ckpt_path)
    net = build_net(ckpt).eval()
    sample = trace_input(net, cfg.sample_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata(ckpt)
    log.info("exporting %s (%s) to %s", cfg.ckpt_path, describe(ckpt), output)
    with exportable(net) as traceable:
        if cfg.format == "onnx":
            export_onnx(traceable, sample, output, int(cfg.opset), meta)
        else:
            export_torchscript(traceable, sample, output, meta)
    results = compare(net, exported_runner(cfg.format, output), cfg.check_sizes, float(cfg.get("tie_tolerance", 1e-4)))
    worst = max(r["max_abs_diff"] for r in results)
    for r in results:
        ties = ""
        if r["tied_windows"]:
            ties = (f" (PyTorch on the runtime's pooling indices: {r['tied_windows']} near-tied max-pool window(s) "
                    f"resolved the other way; {r['max_abs_diff_own_indices']:.3e} with PyTorch's own)")
        print(f"input [N,H,W]={list(r['size'])}: max abs logit difference {cfg.format} vs PyTorch = "
              f"{r['max_abs_diff']:.3e}{ties}")
    print(f"exported {describe(ckpt)} to {output.resolve()} ({output.stat().st_size / 2**20:.1f} MiB)")
    if not worst <= cfg.tolerance:
        raise RuntimeError(f"the exported {cfg.format} model differs from PyTorch by up to {worst:.3e} "
                           f"(> tolerance={cfg.tolerance}); do not deploy {output}")
    return {"output": str(output), "max_abs_diff": worst, "per_size": results}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    export(cfg)


if __name__ == "__main__":
    main()
