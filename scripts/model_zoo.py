#!/usr/bin/env python3
"""Model zoo table: parameters and GFLOPs of every conf/model/*.yaml at 1x3x360x480.

Each architecture is built from its shipped config (default settings, which are the paper's, and
a small ResNet-18 variant where the config names a ResNet backbone),
with the number of classes of the reference measurement. FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` in eval mode (2 FLOPs per multiply-add; main output
only, auxiliary heads are dropped in eval). Models are built on the meta device when possible,
so nothing is allocated or computed; otherwise on the CPU.

    PYTHONPATH=src python scripts/model_zoo.py [--out outputs] [--models fcn8s segnet]

Writes <out>/model_zoo.md and <out>/model_zoo.json and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from segsuite import catalog
from segsuite.catalog import model_config, model_dir, model_names

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)
CONF_DIR = model_dir(ROOT / "conf")
INPUT_SHAPE = (1, 3, 360, 480)
DEFAULT_CLASSES = 21
SMALL_BACKBONE = "resnet18"

# Reference measurements of public implementations (issue 3): classes, params (M), GFLOPs, note.
REFERENCES: dict[str, dict] = {
    "fcn8s": {"classes": 21, "params_m": 134.5, "gflops": 279.6, "setting": "VGG16"},
    "segnet": {"classes": 11, "params_m": 29.5, "gflops": 225.0, "setting": "VGG16-BN"},
    "unet": {"classes": 2, "params_m": 31.0, "gflops": 255.0, "setting": "paper 64-1024"},
    "enet": {"classes": 11, "params_m": 0.36, "gflops": 2.6, "setting": "paper"},
    "pspnet": {
        "classes": 21,
        "params_m": 49.0,
        "gflops": 235.0,
        "setting": "ResNet-50 OS8",
        "note": "incl. 2.4 M aux; GFLOPs main",
    },
    "deeplabv3plus": {
        "classes": 21,
        "params_m": 59.3,
        "gflops": 118.0,
        "setting": "ResNet-101 OS16",
    },
    "upernet": {  # 66.4 M is the 21-class count (66.50 M at ADE20K's 150 classes)
        "classes": 21,
        "params_m": 66.4,
        "gflops": None,
        "setting": "ResNet-50",
        "note": "incl. aux",
    },
}
# Settings that turn a shipped default into the reference's setting (none: the defaults are the papers').
PAPER_OVERRIDES: dict[str, dict] = {}


def build(name: str, num_classes: int, overrides: dict, device: str) -> torch.nn.Module:
    """Instantiate conf/model/<name>.yaml with `num_classes` and `overrides` on `device`."""
    cfg = OmegaConf.create(
        {
            "dataset": {"num_classes": num_classes},
            "model": model_config(name, ROOT / "conf"),
        }
    )
    for key, value in overrides.items():
        OmegaConf.update(cfg.model, key, value, merge=False)  # dotted keys reach the backbone node
    with torch.device(device):
        return hydra.utils.instantiate(cfg.model)


def count_flops(model: torch.nn.Module, device: str) -> int:
    model.eval()
    x = torch.zeros(INPUT_SHAPE, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def measure(name: str, num_classes: int, overrides: dict) -> dict:
    """Parameters (total and auxiliary) and forward GFLOPs of one configuration."""
    for device in ("meta", "cpu"):
        try:
            model = build(name, num_classes, overrides, device)
            flops = count_flops(model, device)
            break
        except (NotImplementedError, RuntimeError) as err:  # an op without a meta kernel
            if device == "cpu":
                raise
            log.info("%s: meta device failed (%s); measuring on the CPU", name, err)
    params = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for n, p in model.named_parameters() if n.startswith("aux"))
    return {"params": params, "aux_params": aux, "gflops": flops / 1e9}


def variants(name: str) -> list[tuple[str, dict]]:
    """(label, overrides) rows for one architecture: default, paper setting, small backbone."""
    rows = [("default", {})]
    if name in PAPER_OVERRIDES:
        rows.append(("paper", PAPER_OVERRIDES[name]))
    if catalog.takes_backbone(name, SMALL_BACKBONE) and catalog.model_backbone(name) != SMALL_BACKBONE:
        rows.append(("small", {catalog.backbone_key(name): SMALL_BACKBONE}))
    return rows


def describe(name: str, overrides: dict) -> str:
    cfg = model_config(name, ROOT / "conf")
    parts = []
    if catalog.has_backbone(name):
        parts.append(str(overrides.get(catalog.backbone_key(name), catalog.model_backbone(name))))
    backbone = cfg.get("backbone")
    stride = cfg.get("output_stride", backbone.get("output_stride") if OmegaConf.is_dict(backbone) else None)
    if stride is not None:
        parts.append(f"OS{stride}")
    if "base_channels" in cfg:
        parts.append(f"width {overrides.get('base_channels', cfg.base_channels)}")
    return " ".join(parts) or "-"


def collect(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        ref = REFERENCES.get(name)
        num_classes = ref["classes"] if ref else DEFAULT_CLASSES
        for label, overrides in variants(name):
            result = measure(name, num_classes, overrides)
            is_ref_setting = ref is not None and (
                label == "paper" or (label == "default" and name not in PAPER_OVERRIDES)
            )
            row = {
                "model": name,
                "variant": label,
                "setting": describe(name, overrides),
                "classes": num_classes,
                **result,
            }
            if is_ref_setting:
                row["ref_params_m"] = ref["params_m"]
                row["ref_gflops"] = ref["gflops"]
                row["ref_note"] = ref.get("note", "")
                row["params_diff_pct"] = (
                    100 * (result["params"] / 1e6 - ref["params_m"]) / ref["params_m"]
                )
                if ref["gflops"]:
                    row["gflops_diff_pct"] = (
                        100 * (result["gflops"] - ref["gflops"]) / ref["gflops"]
                    )
            rows.append(row)
            print(
                f"measured {name} [{label}]: {result['params'] / 1e6:.2f} M, {result['gflops']:.1f} GFLOPs",
                flush=True,
            )
    return rows


def fmt_diff(row: dict, key: str) -> str:
    return f" ({row[key]:+.1f}%)" if key in row else ""


def markdown(rows: list[dict]) -> str:
    lines = [
        ("| model | setting | classes | params (M) | of which aux (M) | GFLOPs @360x480 "
         "| reference params (M) | reference GFLOPs |"),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref_p = (
            f"{r['ref_params_m']}{fmt_diff(r, 'params_diff_pct')}" if "ref_params_m" in r else ""
        )
        ref_g = f"{r['ref_gflops']}{fmt_diff(r, 'gflops_diff_pct')}" if r.get("ref_gflops") else ""
        note = f" ({r['ref_note']})" if r.get("ref_note") else ""
        aux = f"{r['aux_params'] / 1e6:.2f}" if r["aux_params"] else "-"
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['classes']} | {r['params'] / 1e6:.2f} | {aux} | "
            f"{r['gflops']:.1f} | {ref_p}{note} | {ref_g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs", help="output folder")
    parser.add_argument(
        "--models", nargs="*", help="config names (default: every conf/model/*.yaml)"
    )
    args = parser.parse_args(argv)
    available = model_names(ROOT / "conf")
    names = args.models or available
    unknown = sorted(set(names) - set(available))
    if unknown:
        parser.error(
            f"unknown model config(s) {unknown}; choose from {available} (files in {CONF_DIR})"
        )
    rows = collect(names)
    table = markdown(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_zoo.md").write_text(table)
    (args.out / "model_zoo.json").write_text(
        json.dumps({"input_shape": list(INPUT_SHAPE), "rows": rows}, indent=2)
    )
    print(table)


if __name__ == "__main__":
    main()
