"""The run record: a JSON-lines file written as training goes.

Lines, each a JSON object with ``"type"``:

* ``header``: hardware, software versions, carbon factor and its source, PUE, caps;
* ``window``: one per logging window (the logged metrics, step, epoch, seconds, loss);
* ``epoch``: one per epoch end; ``stage``: one per validation/test/predict run;
* ``summary``: totals at the end, with how the run ended;
* ``budget``, ``power_cap``, ``shift``: what a budget, a power cap or a time shift did.

Every line is flushed when written, so a crash loses at most the current window. A
file may hold several runs (appended, even at the same time); every line carries its
run's id (``"run"``), each run starts with a header.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from energy_core.notices import Notice

RECORD_VERSION = 1
# The line types, each written by one place: the tracker (header, window, epoch, stage,
# summary, factor: each carbon intensity or price used, from when, and its source), the
# budget (budget), the power cap (power_cap) and the time shift (shift: its plans, pauses,
# resumes and requeues).
HEADER, WINDOW, EPOCH, STAGE, SUMMARY, BUDGET, POWER_CAP, FACTOR, SHIFT = (
    "header",
    "window",
    "epoch",
    "stage",
    "summary",
    "budget",
    "power_cap",
    "factor",
    "shift",
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
    """Appends run-record lines to a file, flushing each; every line carries its run's id.

    The record is bookkeeping, never a reason to stop training: a line that cannot be
    written (a parent that is a file, no permission, a full disk, a file-size limit) ends
    the record with one notice (`RunRecord.take_notice`), and later writes do nothing.

    Args:
        path: File to append to; its directory is created on first write.

    Examples:
        >>> record = RunRecord("runs/energy.jsonl")   # doctest: +SKIP
        >>> record.new_run()                           # doctest: +SKIP
        >>> record.write("window", step=50, metrics={"energy/total_kwh": 0.01})   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.run_id: str | None = None
        self.failed = False
        self._file: TextIO | None = None
        self._notice: Notice | None = None

    def new_run(self) -> str:
        """Start a new run: the lines written from now on carry a new id."""
        self.run_id = uuid.uuid4().hex[:12]
        return self.run_id

    def write(self, kind: str, **fields: Any) -> None:
        """Append one line ``{"type": kind, "run": id, "time": unix time, **fields}`` and flush it."""
        if self.failed:
            return
        line = {"type": kind, "run": self.run_id or self.new_run(), "time": time.time(), **_clean(fields)}
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(json.dumps(line, allow_nan=False) + "\n")
            self._file.flush()
        except (OSError, ValueError) as err:
            self.failed = True
            self._notice = Notice("warn", f"The run record {str(self.path)!r} cannot be written ({err}); it ends "
                                          "here and training continues.")  # fmt: skip
            self.close()

    def take_notice(self) -> Notice | None:
        """The notice of a failure, once."""
        notice, self._notice = self._notice, None
        return notice

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # the last flush failed (disk full): nothing more to save
                pass
            self._file = None


def read_runs(path: Path) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The runs in a record (each a list of lines, header first) and notes on what was wrong.

    Lines are grouped by their run id, so runs appending to one file at once stay apart;
    lines without an id (older records) belong to the header before them.
    """
    notes: list[str] = []
    runs: list[list[dict[str, Any]]] = []
    by_id: dict[str, list[dict[str, Any]]] = {}
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
        run_id = line.get("run")
        if line["type"] == HEADER:
            runs.append([line])
            if run_id is not None:
                by_id[run_id] = runs[-1]
        elif run_id is not None and run_id in by_id:
            by_id[run_id].append(line)
        elif run_id is not None:
            notes.append(f"line {number} belongs to run {run_id}, whose header is not in this file: skipped")
        elif runs:
            runs[-1].append(line)
    return runs, notes
