"""Read W&B's offline run files back (``<dir>/wandb/offline-run-*/run-*.wandb``).

W&B writes each offline run as a log of protobuf records in LevelDB's log format (blocks
of 32 KiB; each record a 7-byte header: checksum, length, type: full, first, middle,
last), after a 7-byte file header (``:W&B``, magic 0xBEE1, version). ``wandb sync`` reads
the same files; W&B 0.31 ships the records' protobuf (``wandb.proto``) but no reader, so
this is one, checked against the format's header and each record's CRC-32 (of its
type and data, as W&B writes it).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[bytes]:
    """The records of one ``.wandb`` file, each whole."""
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    pos, pieces = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        if pos + _HEADER + length > len(data):  # being written: read it next time
            return
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        assert checksum == zlib.crc32(chunk, zlib.crc32(bytes([kind]))), f"{path}: a torn record"
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pieces = chunk
        elif kind == _MIDDLE:
            pieces += chunk
        elif kind == _LAST:
            yield pieces + chunk
            pieces = b""


@dataclass
class OfflineRun:
    """What one offline W&B run holds: its name, group, config, history rows, summary."""

    name: str = ""
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: Each defined metric's name (or glob) and the metric it is drawn against.
    axes: dict[str, str] = field(default_factory=dict)
    exited: bool = False


def read_run(path: Path) -> OfflineRun:
    """One ``.wandb`` file as an :class:`OfflineRun`."""
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun()
    for raw in records(path):
        record = pb.Record()  # type: ignore[attr-defined]
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group = record.run.display_name, record.run.run_group
            for item in record.run.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            run.rows.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                run.summary[key] = json.loads(item.value_json)
        elif kind == "metric":
            metric = record.metric
            run.axes[metric.name or metric.glob_name] = metric.step_metric
        elif kind == "exit":
            run.exited = True
    return run


def offline_runs(folder: Path) -> dict[str, OfflineRun]:
    """Every offline run under ``folder`` (W&B's ``dir``), by its display name."""
    found = {}
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        run = read_run(path)
        found[run.name] = run
    return found
