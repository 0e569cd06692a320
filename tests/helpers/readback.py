"""Read what real loggers wrote to disk."""

from __future__ import annotations

import csv
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def csv_rows(log_dir: Path) -> list[dict[str, str]]:
    path = sorted(Path(log_dir).rglob("metrics.csv"))[-1]  # the newest run's version_N
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def csv_series(log_dir: Path, key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in csv_rows(log_dir) if r.get(key) not in (None, "")]


def tensorboard_series(log_dir: Path, key: str) -> list[tuple[int, float]]:
    events = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {log_dir}"
    accumulator = EventAccumulator(str(events[-1].parent), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(key)]
