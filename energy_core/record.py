"""The run record: a JSON-lines file written as training goes.

Lines, each a JSON object with ``"type"``:

* ``header``: hardware, software versions, carbon factor and its source, PUE, caps;
* ``window``: one per logging window (the logged metrics, step, epoch, seconds, loss);
* ``epoch``: one per epoch end; ``stage``: one per validation/test/predict run;
* ``summary``: totals at the end, with how the run ended.

Every line is flushed when written, so a crash loses at most the current window. A
file may hold several runs (appended); each starts with a header.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

RECORD_VERSION = 1
# The line types, each written by one place: the tracker (header, window, epoch, stage,
# summary), the budget (budget) and the power cap (power_cap).
HEADER, WINDOW, EPOCH, STAGE, SUMMARY, BUDGET, POWER_CAP = (
    "header",
    "window",
    "epoch",
    "stage",
    "summary",
    "budget",
    "power_cap",
)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy/tensor scalars become floats."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def scalar_losses(values: Mapping[str, Any]) -> dict[str, float]:
    """The scalar losses among logged values (for the record's loss-vs-kWh plot)."""
    found = {}
    for key, value in values.items():
        if "loss" in key:
            try:
                found[key] = float(value)
            except (TypeError, ValueError):
                continue
    return found


class RunRecord:
    """Appends run-record lines to a file, flushing each.

    Args:
        path: File to append to; its directory is created on first write.

    Example:
        >>> record = RunRecord("runs/energy.jsonl")   # doctest: +SKIP
        >>> record.write("window", step=50, metrics={"energy/total_kwh": 0.01})   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None

    def write(self, kind: str, **fields: Any) -> None:
        """Append one line ``{"type": kind, "time": unix time, **fields}`` and flush it."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        line = {"type": kind, "time": time.time(), **_clean(fields)}
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_runs(path: Path) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The runs in a record (each a list of lines, header first) and notes on what was wrong."""
    notes: list[str] = []
    runs: list[list[dict[str, Any]]] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            notes.append(f"line {number} is not JSON (a crash mid-write?): skipped")
            continue
        if not isinstance(line, dict) or "type" not in line:
            notes.append(f"line {number} is not a run-record line: skipped")
            continue
        if line["type"] == HEADER:
            runs.append([line])
        elif runs:
            runs[-1].append(line)
    return runs, notes
