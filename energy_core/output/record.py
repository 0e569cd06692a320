"""The run record: a JSON-lines file written as training goes.

Lines, each a JSON object with ``"type"``:

* ``header``: hardware, software versions, carbon factor and its source, PUE, caps;
* ``window``: one per logging window (the logged metrics, step, epoch, seconds, loss);
* ``epoch``: one per epoch end; ``stage``: one per validation/test/predict run;
* ``target``: one per evaluation a target watches (the metric, the energy so far);
* ``summary``: totals at the end, with how the run ended;
* ``budget``, ``power_cap``, ``shift``: what a budget, a power cap or a time shift did.

Every line is flushed when written, so a crash loses at most the current window. A
file may hold several runs (appended, even at the same time); every line carries its
run's id (``"run"``), each run starts with a header.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from energy_core.checks import open_regular
from energy_core.notices import Notice, printable

RECORD_VERSION = 1
# The line types, each written by one place: the tracker (header, window, epoch, stage,
# summary, factor: each carbon intensity or price used, from when, and its source), the
# budget (budget), the power cap (power_cap), the target (target) and the time shift (shift:
# its plans, pauses, resumes and requeues).
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
TARGET = "target"
CHECK = "check"  # a board's energy counter and its power disagreed beyond their joint bound (the tracker)


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
    written (a parent that is a file, no permission, a full disk, a file-size limit, a path
    that is a link or not a regular file) ends the record with one notice
    (`RunRecord.take_notice`), and later writes do nothing.

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
        self._pid: int | None = None  # the process whose run it is (`new_run`)

    def new_run(self) -> str:
        """Start a new run: the lines written from now on carry a new id. The run is this
        process's: a process forked from it (a worker, a user's ``os.fork``) writes nothing."""
        self.run_id = uuid.uuid4().hex[:12]
        self._pid = os.getpid()
        return self.run_id

    def write(self, kind: str, **fields: Any) -> None:
        """Append one line ``{"type": kind, "run": id, "time": unix time, **fields}`` and flush it."""
        if self.failed or self._pid not in (None, os.getpid()):
            return
        line = {"type": kind, "run": self.run_id or self.new_run(), "time": time.time(), **_clean(fields)}
        try:
            if self._file is None:
                self._file = self._open()
            self._file.write(json.dumps(line, allow_nan=False) + "\n")
            self._file.flush()
        except (OSError, ValueError) as err:
            self.failed = True
            why = err.strerror if isinstance(err, OSError) and err.filename == str(self.path) else err
            self._notice = Notice("warn", f"The run record {printable(self.path)!r} cannot be written ({why}); it "
                                          "ends here and training continues.")  # fmt: skip
            self.close()

    def _open(self) -> TextIO:
        """The record opened for appending, never through a link, and only if it is a regular file.

        ``record_path`` may lie in a shared folder, where another user could have put a link to
        a file of yours (which would then be appended to) or a FIFO (which would block the open
        for ever): a link is refused (``O_NOFOLLOW``), and `open_regular` never waits on the open and
        refuses anything but a regular file on its descriptor.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        try:
            fd = open_regular(self.path, flags, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise OSError(err.errno, "it is a symbolic link, which is not followed", str(self.path)) from None
            if err.errno == errno.ENXIO:  # a FIFO no one reads
                raise OSError(err.errno, "it is not a regular file (a FIFO)", str(self.path)) from None
            raise
        if fd is None:
            raise OSError(errno.EINVAL, "it is not a regular file (a FIFO, a device or a socket)", str(self.path))
        return open(fd, "a", encoding="utf-8")

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


# ----------------------------------------------------------------------------- reading
MAX_LINE_BYTES = 1 << 20  # a record line is a few KB (a window of a 1,000-rank job some 100 KB)


def _number(value: Any) -> bool:
    """A finite JSON number a float can hold (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer of 400 digits
        return False


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**63


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _fields(**checks: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """An object whose fields, where present, pass their checks."""
    return lambda value: isinstance(value, dict) and all(k not in value or c(value[k]) for k, c in checks.items())


def _values(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """An object every value of which passes ``check``."""
    return lambda value: isinstance(value, dict) and all(check(v) for v in value.values())


def _items(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


_METRICS = _values(_optional(_number))  # a figure the writer could not give is null
_CARBON = _fields(g_per_kwh=_number, pue=_number, source=_text)
_BOUNDARY = {"step": _integer, "seconds": _number, "elapsed_s": _number, "metrics": _METRICS, "extra": _fields()}
# What readers rely on in each line type: each field, where present, must pass its check; a
# line that fails one is damaged (another user's edit, a bad disk) and skipped, with a note.
LINE_FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    HEADER: {
        "carbon": _CARBON,
        "estimated": _items(_text),
        "resumed_from": _optional(_fields(energy_j=_values(_number), fit_s=_number)),
    },
    WINDOW: _BOUNDARY,
    EPOCH: _BOUNDARY,
    STAGE: {
        "stage": _text,
        "step": _integer,
        "seconds": _number,
        "kwh": _number,
        "kwh_err": _optional(_number),
        "metrics": _METRICS,
    },
    SUMMARY: {
        "step": _integer,
        "status": _text,
        "metrics": _METRICS,
        **{
            name: _optional(_number)
            for name in ("seconds", "mean_power_w", "j_per_sample", "j_per_token", "energy_j_err")
        },
        "carbon": _CARBON,
        "cost": _optional(_fields(total=_number, currency=_optional(_text))),
    },
    POWER_CAP: {"caps": _items(_fields(gpu=_optional(lambda v: _integer(v) or _text(v)), cap_w=_number))},
    FACTOR: {"factor": _text, "value": _number, "source": _text, "since": _optional(_number)},
    CHECK: {name: _number for name in ("seconds", "counter_j", "power_j", "bound_j")} | {"source": _text},
    BUDGET: {"event": _text, "step": _integer, "metrics": _METRICS},
    TARGET: {
        "event": _text,
        "step": _integer,
        "metric": _text,
        **{name: _optional(_number) for name in ("energy_kwh", "co2e_kg", "seconds", "gain_per_kwh")},
    },
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # NaN and Infinity: the writer never writes them


# One decoder for every line: ``json.loads`` with an argument makes one per call, which was a fifth of
# the time a file of damaged lines took.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unicode(value: Any) -> Any:
    """``value`` with each lone surrogate in its text written out (``\\udcff``): JSON's ``"\\udcff"``
    (an argument that was not UTF-8, as Python holds it) is a str no terminal or file can take."""
    if isinstance(value, str):
        return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", value)
    if isinstance(value, list):
        return [_unicode(v) for v in value]
    if isinstance(value, dict):
        return {_unicode(k): _unicode(v) for k, v in value.items()}
    return value


def parse_line(raw: str) -> tuple[dict[str, Any] | None, str]:
    """One record line: (the line, "") when it is one, else (None, why not)."""
    try:
        line = _DECODER.decode(raw)
        if _SURROGATE_ESCAPE.search(raw):  # maybe a lone surrogate (a pair is one character once read)
            line = _unicode(line)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return None, "is not JSON (a crash mid-write?)"
    if not isinstance(line, dict) or not isinstance(line.get("type"), str):
        return None, "is not a run-record line"
    if "run" in line and not _text(line["run"]):
        return None, "is damaged (its 'run' is not a run id)"
    if "time" in line and not _number(line["time"]):
        return None, "is damaged (its 'time' is not a number)"
    for name, check in LINE_FIELDS.get(line["type"], {}).items():
        if name in line and not check(line[name]):
            return None, f"is damaged (its {name!r} is not what a run record holds)"
    return line, ""


# Of each reason a line is skipped, the lines named one by one: the rest are counted in one note, so a
# file of a million damaged lines (another user's, or a disk's) gives a few notes, not a million.
NAMED_PER_REASON = 3


class Skipped:
    """The lines a reader skipped, kept bounded: of each reason (not JSON, a field of the wrong type,
    over `MAX_LINE_BYTES`, a run whose header is not in the file) the first `NAMED_PER_REASON` lines
    are named, and the others counted in one more note. The reasons are the reader's own (a few dozen at
    most), so the notes of a file stay a few KB whatever it holds.

    Example:
        >>> skipped = Skipped()
        >>> for number in range(1, 7):
        ...     skipped.add(number, "is not JSON")
        >>> skipped.notes()[-2:]
        ['line 3 is not JSON: skipped', '3 more lines skipped for the same reason as line 3, the last of them line 6']
    """

    def __init__(self) -> None:
        self.count = 0  # every line skipped
        self._named: dict[str, list[int]] = {}  # reason: the numbers of the lines named
        self._more: dict[str, list[int]] = {}  # reason: [how many more, the number of the last]

    def add(self, number: int, why: str) -> None:
        """Line ``number`` was skipped because it ``why`` ("is not JSON ...")."""
        self.count += 1
        named = self._named.setdefault(why, [])
        if len(named) < NAMED_PER_REASON:
            named.append(number)
            return
        more = self._more.setdefault(why, [0, 0])
        more[0] += 1
        more[1] = number

    def notes(self) -> list[str]:
        """One note per line named, then, for a reason with more lines, one with their count."""
        found = []
        for why, numbers in self._named.items():
            found += [f"line {number} {why}: skipped" for number in numbers]
            if why in self._more:
                count, last = self._more[why]
                found.append(f"{count:,} more lines skipped for the same reason as line {numbers[-1]}, the last of "
                             f"them line {last}")  # fmt: skip
        return found


def _raw_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(number, text) of each line, read one at a time; text None for a line over `MAX_LINE_BYTES`.

    Raises:
        OSError: ``path`` cannot be opened, is a symbolic link (not followed: another user could have
            planted it, pointing at a file of yours), or is not a regular file (a FIFO would block the
            read for ever: the open never waits, and the kind is checked on the descriptor).
    """
    try:
        fd = open_regular(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(err.errno, "it is a symbolic link, which is not followed", str(path)) from None
        raise
    if fd is None:
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device or a socket)", str(path))
    with open(fd, "rb") as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass  # the rest of the line, not kept
                yield number, None
            else:
                yield number, raw.decode("utf-8", errors="replace")


def record_lines(path: Path, skipped: Skipped) -> Iterator[tuple[int, dict[str, Any]]]:
    """The lines of a record, one at a time: (the index of its run, the line) for each run-record
    line; each line skipped is added to ``skipped``.

    A header opens a run; a line joins the run of its id (runs appending to one file at once
    stay apart); a line without an id (older records) joins the run of the header before it.

    Raises:
        OSError: as `_raw_lines`.
    """
    run_of: dict[str, int] = {}
    runs = 0
    for number, raw in _raw_lines(path):
        if raw is None:
            skipped.add(number, f"is over {MAX_LINE_BYTES // 1024} KiB")
            continue
        if not raw.strip():
            continue
        line, why = parse_line(raw)
        if line is None:
            skipped.add(number, why)
            continue
        run_id = line.get("run")
        if line["type"] == HEADER:
            runs += 1
            if run_id is not None:
                run_of[run_id] = runs - 1
            yield runs - 1, line
        elif run_id is not None and run_id in run_of:
            yield run_of[run_id], line
        elif run_id is not None:
            skipped.add(number, "belongs to a run whose header is not in this file")
        elif runs:
            yield runs - 1, line


def read_runs(path: Path) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The runs in a record (each a list of lines, header first) and notes on the lines skipped
    (see `record_lines` and `Skipped`: damaged lines are named, the first few of each kind, and
    counted, never a reason to fail).

    Raises:
        OSError: ``path`` cannot be opened, is a symbolic link (not followed) or not a regular file.
    """
    runs: list[list[dict[str, Any]]] = []
    skipped = Skipped()
    for index, line in record_lines(Path(path), skipped):
        if index == len(runs):
            runs.append([])
        runs[index].append(line)
    return runs, skipped.notes()
