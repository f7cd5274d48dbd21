"""What the benchmark ran on: CPU, GPU, library versions, threads, load."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from typing import Any

import torch


def machine_info(device: torch.device) -> dict[str, Any]:
    """Python and torch versions, threads, CPU model and count, bf16 support, GPU, load average."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": device.type}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "?").strip()
        info["cpus"] = int(fields.get("CPU(s)", "0").strip() or 0)
        flags = fields.get("Flags", "")
        info["cpu_bf16"] = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor() or "?"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_avg_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def render(results: dict[str, Any]) -> list[str]:
    """The report's first line: the machine and its load."""
    m = results["machine"]
    return [f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs"
            + (f", GPU {m['gpu']}" if "gpu" in m else "")
            + f"; torch {m['torch']}, {m['threads']} threads; load average at start {m.get('load_avg_start')}"
            + (f", at end {m.get('load_avg_end')}" if "load_avg_end" in m else "") + ".", ""]
