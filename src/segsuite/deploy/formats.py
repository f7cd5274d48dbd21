"""Writing a traced network as ONNX or TorchScript with segsuite's metadata, and running the file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segsuite.manifest import RunManifest

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
# the packages a format needs beyond torch, and the extra of segsuite that installs them
NEEDS = {"onnx": (("onnx", "onnxruntime"), "export")}


def require_packages(fmt: str) -> None:
    """Fail, naming what to install, when a package that writing or checking `fmt` needs is missing."""
    packages, extra = NEEDS.get(fmt, ((), ""))
    missing = []
    for package in packages:
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise ModuleNotFoundError(f"format={fmt} needs {' and '.join(missing)}, missing here; install with "
                                  f"pip install 'segsuite[{extra}]' (or format=torchscript, which needs torch only)")


def metadata(manifest: RunManifest) -> dict[str, str]:
    """What a deployment needs besides the graph: classes, colours, normalisation, architecture."""
    return {
        "architecture": manifest.model_target,
        "num_classes": str(manifest.num_classes),
        "class_names": json.dumps(manifest.class_names),
        "palette": json.dumps(manifest.palette),
        "mean": json.dumps(manifest.mean),  # 0-1 units: x = (rgb / 255 - mean) / std
        "std": json.dumps(manifest.std),
        "input": "image float32 [N,3,H,W] RGB, (rgb/255 - mean)/std; output logits float32 [N,C,H,W]",
    }


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
