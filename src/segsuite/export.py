"""Export entry point: `python -m segsuite.export ckpt_path=... format=onnx|torchscript [output=...]`.

The exported graph maps a normalised image batch `image [N,3,H,W]` (float32) to `logits [N,C,H,W]`;
ONNX has dynamic batch, height and width. The model's own padding to its stride is traced with
dynamic sizes, so the trace input must not be a multiple of the stride (checked). After writing,
the file is loaded (onnxruntime / `torch.jit.load`) and compared with PyTorch at every
`check_sizes` entry (`segsuite.deploy.check`, which also explains how near-tied max-pooling windows
are handled); the largest absolute logit difference is printed and the command fails above
`tolerance`. Class names, palette and normalisation travel in the file's metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from segsuite.checkpoint import build_net, load_checkpoint
from segsuite.deploy import formats
from segsuite.deploy.check import compare, report_lines
from segsuite.deploy.exportable import exportable, trace_input
from segsuite.deploy.formats import FORMATS, export_onnx, export_torchscript, exported_runner, metadata
from segsuite.manifest import RunManifest
from segsuite.utils.config import check_required
from segsuite.utils.paths import config_dir
from segsuite.utils.resolvers import register_resolvers
from segsuite.utils.task_wrapper import run_task

register_resolvers()  # the help's ${segsuite_help:...}
log = logging.getLogger("segsuite.export")


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export `cfg.ckpt_path` as `cfg.format`, verify it; return the path and per-size differences."""
    check_required(cfg)
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}: expected one of {sorted(FORMATS)}")
    formats.require_packages(cfg.format)  # before any work: name the extra to install
    output = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / f"model{FORMATS[cfg.format]}"
    if output.exists() and not cfg.overwrite:
        raise FileExistsError(f"output={output} already exists; pass overwrite=true to replace it")
    ckpt = load_checkpoint(cfg.ckpt_path)
    manifest = RunManifest.from_checkpoint(ckpt)
    net = build_net(ckpt).eval()
    sample = trace_input(net, cfg.sample_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s (%s) to %s", cfg.ckpt_path, manifest.describe(), output)
    if cfg.format == "onnx":
        export_onnx(exportable(net), sample, output, int(cfg.opset), metadata(manifest))
    else:
        export_torchscript(exportable(net), sample, output, metadata(manifest))
    results = compare(net, exported_runner(cfg.format, output), cfg.check_sizes, float(cfg.get("tie_tolerance", 1e-4)))
    worst = max(r["max_abs_diff"] for r in results)
    print("\n".join(report_lines(cfg.format, results)))
    print(f"exported {manifest.describe()} to {output.resolve()} ({output.stat().st_size / 2**20:.1f} MiB)")
    if not worst <= cfg.tolerance:
        raise RuntimeError(f"the exported {cfg.format} model differs from PyTorch by up to {worst:.3e} "
                           f"(> tolerance={cfg.tolerance}); do not deploy {output}")
    return {"output": str(output), "max_abs_diff": worst, "per_size": results}


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: a failure prints one line (traceback: `HYDRA_FULL_ERROR=1`) and leaves no empty run dir."""
    run_task(export, cfg, log)


if __name__ == "__main__":
    main()
