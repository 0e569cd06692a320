"""Grid intensity and electricity price over time: a fixed figure, a recorded series, or a live API.

Every provider answers one question, `Factor.at(unix_time)`: the value in force then and
where it came from. Three kinds:

* `Fixed`: one figure for the whole run (an explicit value or the location lookup of
  `energy_core.carbon`);
* `Series`: a CSV file with a header row, an ISO 8601 timestamp with its UTC offset and a
  value per row; each value holds from its timestamp until the next. Before the first row
  the first value is used, after the last the last one, each time with one notice;
* `energy_core.electricity_maps.ElectricityMaps`: the live intensity of a zone from the
  Electricity Maps API, refreshed on a thread of its own (its own module).

`Factor.history` keeps every value used, with its source, for the run record.
"""

from __future__ import annotations

import copy
import csv
import errno
import math
import os
import stat
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from energy_core.checks import open_regular
from energy_core.notices import Notice
from energy_core.units import MAX_G_PER_KWH

# The moments a series' row may have: grid data and training runs lie between these (a row
# outside is a mistake, and its moment could not even be shown in local time).
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc).timestamp()
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class Value:
    """A value in force from ``since`` (unix time), and where it came from."""

    value: float
    source: str
    since: float


class MadeAgain:
    """Pickled without its locks and threads (`MADE_AGAIN`: each attribute's maker), which are made anew:
    a callback is pickled whole where a framework starts its processes so (Lightning's
    ``strategy="ddp_spawn"``), before any reading."""

    MADE_AGAIN: ClassVar[dict[str, Callable[[], Any]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name not in self.MADE_AGAIN}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.update({name: make() for name, make in self.MADE_AGAIN.items()})


class Factor(MadeAgain):
    """A value that may change over time (g CO2e/kWh, or a price per kWh).

    Attributes:
        history: Every distinct value used so far, in order (for the run record).
    """

    name = "factor"
    MADE_AGAIN: ClassVar[dict[str, Callable[[], Any]]] = {"_kept": threading.Lock}

    def __init__(self) -> None:
        self.history: list[Value] = []
        self._notices: list[Notice] = []
        self._said: set[str] = set()  # the keys of the warnings given (`_once`)
        self._newest = -math.inf  # the latest moment `at` was asked for
        self._kept = threading.Lock()  # `at` is asked on the training thread and the sampler's

    def at(self, when: float) -> Value:
        """The value in force at unix time ``when``, kept in `history` when it changed.

        The values kept are those the sampler charges energy at, in time order, and the run's at
        its start and end (the training thread's other questions, "now", are `peek`s: a "now"
        ahead of a stalled sampler kept a row's value that the readings then charged behind it, or
        dropped the rows between). A look back before the latest moment kept is not kept, so that
        the history, and the record's factor lines, stay in time order."""
        found = self._lookup(when)
        with self._kept:
            if when < self._newest:
                return found
            self._newest = when
            last = self.history[-1] if self.history else None
            if last is None or (found.value, found.source) != (last.value, last.source):
                self.history.append(found)
        return found

    def peek(self, when: float) -> Value:
        """The value in force at ``when``, not kept in `history` (for previews)."""
        return self._lookup(when)

    def _lookup(self, when: float) -> Value:
        raise NotImplementedError

    def changes(self, start: float, end: float) -> list[float]:
        """The unix times strictly between ``start`` and ``end`` where the value is known to change
        (none: a fixed figure, or a live one, whose next value is not known in advance)."""
        return []

    def start(self) -> None:
        """Begin refreshing, if the factor is live (called at fit start)."""

    def stop(self) -> None:
        """Stop refreshing."""

    def take_notices(self) -> list[Notice]:
        found, self._notices = self._notices, []
        return found

    def _once(self, key: str, text: str) -> None:
        """Warn with ``text`` the first time ``key`` comes up."""
        if key not in self._said:
            self._said.add(key)
            self._notices.append(Notice("warn", text))

    def describe(self) -> dict[str, object]:
        """For the run record's header."""
        return {"kind": type(self).__name__.lower()}


class Fixed(Factor):
    """One value for the whole run.

    Args:
        value: The figure.
        source: Where it came from.
    """

    def __init__(self, value: float, source: str) -> None:
        super().__init__()
        self.value = Value(value, source, -math.inf)

    def _lookup(self, when: float) -> Value:
        return self.value

    def describe(self) -> dict[str, object]:
        return {"kind": "fixed", "value": self.value.value, "source": self.value.source}


def parse_series(path: str | os.PathLike[str], name: str, high: float) -> tuple[np.ndarray, np.ndarray]:
    """(unix times, values) of a series file, sorted by time; values in [0, ``high``].

    The file is read line by line into packed arrays (a 1e6-row file costs a few tens of MB,
    not a list of rows).

    Raises:
        ValueError: naming the argument, the file and the line, for anything malformed.
    """
    times, values, lines = array("d"), array("d"), array("q")
    try:
        with open(_open_regular(path, name), encoding="utf-8-sig", newline="") as handle:
            rows = csv.reader(handle)
            header = next(rows, None)
            if header is not None and _is_data(header):  # a file written without its header
                raise ValueError(
                    f"{name}: line 1 of {os.fspath(path)!r} is a row of data, but the first line must be a header "
                    "row (e.g. time,g_per_kwh): it would be skipped"
                )
            for number, row in enumerate(rows, 2):
                if row and "".join(row).strip():
                    named = len(header) if header is not None else 2
                    if any(field.strip() for field in row[max(named, 2) :]):  # 0,21: a price cut to 0 ("x," is fine)
                        raise ValueError(
                            f"{name}: line {number} of {os.fspath(path)!r} has {len(row)} fields, its header "
                            f"{named}: a decimal comma or a thousands separator? Write 0.21, not 0,21"
                        )
                    times.append(_moment(row, number, path, name))
                    values.append(_value(row, number, path, name, high))
                    lines.append(number)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{name}: cannot read {os.fspath(path)!r} as UTF-8 CSV ({err})") from None
    if not times:
        raise ValueError(f"{name}: {os.fspath(path)!r} has no rows after its header")
    moments, order = np.frombuffer(times), np.argsort(np.frombuffer(times), kind="stable")
    sorted_times = moments[order]
    repeated = np.flatnonzero(sorted_times[1:] == sorted_times[:-1])
    if repeated.size:  # the first line (in the file) that repeats an earlier line's moment
        later = np.frombuffer(lines, dtype=np.int64)[order[repeated + 1]]
        first = int(np.argmin(later))
        number, earlier = int(later[first]), int(lines[order[repeated[first]]])
        raise ValueError(
            f"{name}: line {number} of {os.fspath(path)!r} repeats the moment of line {earlier}: which value "
            "holds is ambiguous"
        )
    return sorted_times, np.frombuffer(values)[order]


def _moment(row: list[str], number: int, path: str | os.PathLike[str], name: str) -> float:
    """The unix time of a row's timestamp (ISO 8601 with its UTC offset)."""
    try:
        stamp = datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
        float(row[1])
    except (ValueError, IndexError):
        raise ValueError(
            f"{name}: line {number} of {os.fspath(path)!r} must be an ISO 8601 timestamp with its UTC offset "
            f"and a number, got {row!r}"
        ) from None
    if stamp.tzinfo is None:
        raise ValueError(
            f"{name}: line {number} of {os.fspath(path)!r} has no UTC offset ({row[0]!r}); write e.g. "
            "2026-06-01T12:00:00+00:00"
        )
    moment = stamp.timestamp()
    if not EARLIEST <= moment < LATEST:
        raise ValueError(
            f"{name}: line {number} of {os.fspath(path)!r} has a moment that is not between 1970 and 2200 ({row[0]!r})"
        )
    return moment


def _open_regular(path: str | os.PathLike[str], name: str) -> int:
    """A descriptor of ``path`` opened for reading: a regular file, not a symbolic link (whose target
    an error would quote), never waiting (a FIFO) nor opening a device, checked again on the
    descriptor itself (the path may change between the two looks).

    Raises:
        ValueError: naming the argument and the file.
    """
    shown = repr(os.fspath(path))
    try:
        kind = os.lstat(path).st_mode
        if stat.S_ISLNK(kind):
            raise OSError(errno.ELOOP, "a symbolic link")
        if not stat.S_ISREG(kind):  # never opened: opening a device may act on it
            raise ValueError(f"{name}: {shown} is not a regular file")
        fd = open_regular(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{name}: {shown} is a symbolic link, which is not followed: give the file") from None
        if err.errno == errno.ENOENT:
            raise ValueError(f"{name}: {shown} is not a regular file (it does not exist)") from None
        raise ValueError(f"{name}: cannot open {shown} ({err.strerror})") from None
    if fd is None:  # no longer what was looked at: a directory, a FIFO (which would block), a device
        raise ValueError(f"{name}: {shown} is not a regular file")
    return fd


def _is_data(row: list[str]) -> bool:
    """Whether a header row is in fact a row of data: a time and a number."""
    try:
        datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
        float(row[1])
    except (ValueError, IndexError):
        return False
    return True


def _value(row: list[str], number: int, path: str | os.PathLike[str], name: str, high: float) -> float:
    """A row's value, in [0, ``high``]."""
    value = float(row[1])
    if not math.isfinite(value) or not 0 <= value <= high:
        raise ValueError(
            f"{name}: line {number} of {os.fspath(path)!r} has a value that is not in [0, {high:g}]: {row[1]!r}"
        )
    return value


class Series(Factor):
    """A recorded series: each value holds from its timestamp until the next.

    Args:
        path: The CSV file (header row; ISO 8601 timestamp with offset, value).
        name: The argument it came from, for messages.
        unit: The values' unit, for messages.
        high: The largest plausible value (`MAX_G_PER_KWH` for an intensity; `MAX_PRICE_PER_KWH`
            for a price).

    Attributes:
        times: The rows' unix times, sorted.
        values: The rows' values, in the same order.
    """

    def __init__(self, path: str | os.PathLike[str], name: str, unit: str, high: float = MAX_G_PER_KWH) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.name, self.unit = name, unit
        self.times, self.values = parse_series(path, name, high)

    def fresh(self) -> Series:
        """The same series (its rows shared, not parsed again) with no history or notices yet:
        what each run charges with."""
        other = copy.copy(self)
        Factor.__init__(other)
        return other

    def _lookup(self, when: float) -> Value:
        i = int(np.searchsorted(self.times, when, side="right")) - 1
        if i < 0:
            self._once("before", f"{self.name}: the run is before the series' first row; its first value is used.")
            i = 0
        elif i == len(self.times) - 1 and when > self.times[-1] + self._step():
            self._once("after", f"{self.name}: the run is past the series' last row; its last value is used.")
        since = float(self.times[i])
        source = f"{Path(self.path).name} from {datetime.fromtimestamp(since).astimezone().isoformat()}"
        return Value(float(self.values[i]), source, since)

    def changes(self, start: float, end: float) -> list[float]:
        """The unix times strictly between ``start`` and ``end`` where the value changes (its rows)."""
        first, last = np.searchsorted(self.times, start, side="right"), np.searchsorted(self.times, end, side="left")
        return [float(t) for t in self.times[first:last]]

    def _step(self) -> float:
        return float(self.times[-1] - self.times[-2]) if len(self.times) > 1 else 3600.0

    def covers(self, start: float, end: float) -> bool:
        """Whether unix times ``start`` to ``end`` lie within the series (its last row holding
        for one more step), so that no end value stands in."""
        return bool(self.times[0] <= start and end <= self.times[-1] + self._step())

    def describe(self) -> dict[str, object]:
        return {"kind": "series", "path": self.path, "rows": len(self.times)}
