"""Read what an offline W&B run recorded: its run id, history rows and summary, from the ``run-*.wandb`` file.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0) followed by LevelDB-log
framing (32 KiB blocks; each chunk has a 4-byte checksum, a 2-byte little-endian length and a 1-byte type:
1 full, 2 first, 3 middle, 4 last) around serialised ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_HEADER = 7


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    out, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


@dataclass
class OfflineRun:
    run_id: str = ""
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    group: str = ""
    sweep_id: str = ""
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (type, name) of each logged artifact
    exit_code: int | None = None


def read_offline_run(run_dir: Path, timeout: float = 15.0) -> OfflineRun:
    """Parse ``run_dir/run-*.wandb`` (an ``offline-run-*`` folder) once W&B has written its exit record.

    ``wandb.finish()`` can return before W&B's service process has flushed the file, so this waits (up to
    ``timeout`` seconds) for the exit record that closes a finished run; a run without one is parsed as it is.
    """
    deadline = time.monotonic() + timeout
    while True:
        run = _parse(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _parse(run_dir: Path) -> OfflineRun:
    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for raw in _records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.tags, run.group, run.sweep_id = list(record.run.tags), record.run.run_group, record.run.sweep_id
            for item in record.run.config.update:  # the config given to wandb.init (a sweep's parameters)
                run.config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "artifact":
            run.artifacts.append((record.artifact.type, record.artifact.name))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
        elif kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            run.history.append(row)
            run.images.extend(k[: -len("/_type")] for k, v in row.items() if k.endswith("/_type") and "image" in str(v))
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return run
