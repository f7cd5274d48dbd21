"""Reading an offline W&B run (`run-<id>.wandb`) in tests, independently of the wandb client.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then 32 KiB
blocks of chunks (4-byte CRC, 2-byte length, 1-byte type: full/first/middle/last) whose payloads
join into protobuf `Record`s.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """All protobuf records of a `.wandb` file, in order."""
    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += room
            continue
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def run_file(run_dir: Path) -> Path:
    """The `.wandb` file of an offline run directory."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    return path


def history(run_dir: Path) -> list[dict[str, Any]]:
    """Every logged history row as {key: decoded JSON value}; media (logged as nested keys)
    become dicts, e.g. row["val/examples"]["_type"]."""
    rows = []
    for record in records(run_file(run_dir)):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            path = [item.key] if item.key else list(item.nested_key)
            node = row
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def run_record(run_dir: Path) -> wandb_internal_pb2.RunRecord:
    """The run record (group, tags, config, ...)."""
    return next(r.run for r in records(run_file(run_dir)) if r.WhichOneof("record_type") == "run")


def config(run_dir: Path) -> dict[str, Any]:
    """The run config as logged (all config records merged)."""
    merged: dict[str, Any] = {}
    for record in records(run_file(run_dir)):
        kind = record.WhichOneof("record_type")
        items = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        for item in items:
            merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged
