"""Read a W&B offline run file (``run-*.wandb``) back, without wandb's internal reader.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0),
then 32 KiB blocks of records, each with a 7-byte header (CRC32C, little-endian length,
type FULL=1/FIRST=2/MIDDLE=3/LAST=4) and a piece of a serialized
``wandb_internal_pb2.Record``. (wandb removed its Python ``DataStore`` reader; the
format and the protobuf are what the real file holds.)
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, out, pieces = 7, [], b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < 7:  # block trailer: skip to the next block
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - (pos % BLOCK) if pos % BLOCK else 0
            continue
        if kind in (FULL, FIRST):
            pieces = chunk
        elif kind in (MIDDLE, LAST):
            pieces += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pieces)
            out.append(record)
    return out


def settled(path: Path, quiet_s: float = 0.5, limit_s: float = 10.0) -> None:
    """Wait until the file has stopped growing for ``quiet_s``: wandb's service process
    may still be appending records when ``wandb.finish()`` returns."""
    deadline = time.monotonic() + limit_s
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)


def read_run(directory: Path) -> dict[str, Any]:
    """History rows, metric definitions, summary and config of the one offline run under directory."""
    (path,) = sorted(Path(directory).rglob("offline-run-*/run-*.wandb"))
    settled(path)
    history, metrics, summary, config = [], {}, {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {
                    item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "metric":
            metrics[record.metric.name] = record.metric
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.nested_key[0] if item.nested_key else item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.nested_key[0] if item.nested_key else item.key] = json.loads(item.value_json)
    return {"history": history, "metrics": metrics, "summary": summary, "config": config}
