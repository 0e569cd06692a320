"""Grid intensity and electricity price over time: a fixed figure, a recorded series, or a live API.

Every provider answers one question, `Factor.at(unix_time)`: the value in force then and
where it came from. Three kinds:

* `Fixed`: one figure for the whole run (an explicit value or the location lookup of
  `energy_core.carbon`);
* `Series`: a CSV file with a header row, an ISO 8601 timestamp with its UTC offset and a
  value per row; each value holds from its timestamp until the next. Before the first row
  the first value is used, after the last the last one, each time with one notice;
* `ElectricityMaps`: the live intensity of a zone from the Electricity Maps API v3,
  refreshed every `REFRESH_S` on a thread of its own (never the training thread). On any
  failure it keeps the last figure (one notice), and without a figure for `STALE_S` it
  falls back to the location lookup (one notice). The token comes from
  ``$ELECTRICITYMAPS_API_KEY`` and is never logged.

`Factor.history` keeps every value used, with its source, for the run record.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from energy_core.notices import Notice

TOKEN_ENV = "ELECTRICITYMAPS_API_KEY"
URL_ENV = "ELECTRICITYMAPS_API_URL"  # another endpoint (a proxy, a test server)
DEFAULT_URL = "https://api.electricitymap.org/v3"
REFRESH_S = 900.0  # Electricity Maps' values are hourly: every 15 minutes is often enough
TIMEOUT_S = 5.0
STALE_S = 3 * 3600.0  # a live figure older than this gives way to the location lookup
MAX_G_PER_KWH = 2000.0  # no grid emits more (coal plants ~1,000): a larger figure is a fault
MAX_PRICE = 1e6  # per kWh, in any currency: a larger figure is a unit mistake
MAX_ANSWER_BYTES = 64 * 1024  # the API's answer is a few hundred bytes
ZONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would send the token on to wherever a redirect points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises HTTPError with the 3xx code


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class Value:
    """A value in force from ``since`` (unix time), and where it came from."""

    value: float
    source: str
    since: float


class Factor:
    """A value that may change over time (g CO2e/kWh, or a price per kWh).

    Attributes:
        history: Every distinct value used so far, in order (for the run record).
    """

    name = "factor"

    def __init__(self) -> None:
        self.history: list[Value] = []
        self._notices: list[Notice] = []

    def at(self, when: float) -> Value:
        """The value in force at unix time ``when``."""
        found = self._lookup(when)
        if not self.history or (found.value, found.source) != (self.history[-1].value, self.history[-1].source):
            self.history.append(found)
        return found

    def peek(self, when: float) -> Value:
        """The value in force at ``when``, not kept in `history` (for previews)."""
        return self._lookup(when)

    def _lookup(self, when: float) -> Value:
        raise NotImplementedError

    def start(self) -> None:
        """Begin refreshing, if the factor is live (called at fit start)."""

    def stop(self) -> None:
        """Stop refreshing."""

    def take_notices(self) -> list[Notice]:
        found, self._notices = self._notices, []
        return found

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


def parse_series(path: str | os.PathLike[str], name: str, high: float) -> tuple[list[float], list[float]]:
    """(unix times, values) of a series file, sorted by time; values in [0, ``high``].

    Raises:
        ValueError: naming the argument, the file and the line, for anything malformed.
    """
    times: list[float] = []
    values: list[float] = []
    seen: dict[float, int] = {}  # moment -> line
    if not os.path.isfile(path):  # a directory, a FIFO (which would block), a device
        raise ValueError(f"{name}: {os.fspath(path)!r} is not a regular file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{name}: cannot read {os.fspath(path)!r} as UTF-8 CSV ({err})") from None
    for number, row in enumerate(rows[1:], 2):
        if not row or not "".join(row).strip():
            continue
        try:
            stamp = datetime.fromisoformat(row[0].strip().replace("Z", "+00:00"))
            value = float(row[1])
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
        if not math.isfinite(value) or not 0 <= value <= high:
            raise ValueError(
                f"{name}: line {number} of {os.fspath(path)!r} has a value that is not in [0, {high:g}]: {row[1]!r}"
            )
        if stamp.timestamp() in seen:
            raise ValueError(
                f"{name}: line {number} of {os.fspath(path)!r} repeats the moment of line {seen[stamp.timestamp()]} "
                f"({row[0].strip()!r}): which value holds is ambiguous"
            )
        seen[stamp.timestamp()] = number
        times.append(stamp.timestamp())
        values.append(value)
    if not times:
        raise ValueError(f"{name}: {os.fspath(path)!r} has no rows after its header")
    order = sorted(range(len(times)), key=times.__getitem__)
    return [times[i] for i in order], [values[i] for i in order]


class Series(Factor):
    """A recorded series: each value holds from its timestamp until the next.

    Args:
        path: The CSV file (header row; ISO 8601 timestamp with offset, value).
        name: The argument it came from, for messages.
        unit: The values' unit, for messages.
        high: The largest plausible value (`MAX_G_PER_KWH` for an intensity; `MAX_PRICE` for a price).
    """

    def __init__(self, path: str | os.PathLike[str], name: str, unit: str, high: float = MAX_G_PER_KWH) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.name, self.unit = name, unit
        self.times, self.values = parse_series(path, name, high)
        self._warned: set[str] = set()

    def _lookup(self, when: float) -> Value:
        i = bisect.bisect_right(self.times, when) - 1
        if i < 0:
            self._once("before", f"{self.name}: the run is before the series' first row; its first value is used.")
            i = 0
        elif i == len(self.times) - 1 and when > self.times[-1] + self._step():
            self._once("after", f"{self.name}: the run is past the series' last row; its last value is used.")
        source = f"{Path(self.path).name} from {datetime.fromtimestamp(self.times[i]).astimezone().isoformat()}"
        return Value(self.values[i], source, self.times[i])

    def _step(self) -> float:
        return self.times[-1] - self.times[-2] if len(self.times) > 1 else 3600.0

    def _once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._notices.append(Notice("warn", text))

    def describe(self) -> dict[str, object]:
        return {"kind": "series", "path": self.path, "rows": len(self.times)}


class ElectricityMaps(Factor):
    """The live carbon intensity of a zone from Electricity Maps, refreshed on its own thread.

    Args:
        zone: The zone, e.g. ``"FR"`` or ``"US-CAL-CISO"``.
        fallback: The figure used before the first answer and once the last one is stale.
        clock: Unix time (``time.time``); tests may drive it.
    """

    name = "electricity_maps_zone"

    def __init__(self, zone: str, fallback: Fixed, clock: object = time.time) -> None:
        super().__init__()
        self.zone = zone
        self.fallback = fallback
        self.clock = clock
        query = urllib.parse.urlencode({"zone": zone})
        self.url = os.environ.get(URL_ENV, DEFAULT_URL).rstrip("/") + "/carbon-intensity/latest?" + query
        self._latest: Value | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def _lookup(self, when: float) -> Value:
        with self._lock:
            latest = self._latest
        if latest is not None and when - latest.since <= STALE_S:
            return latest
        if latest is not None:
            self._once("stale", f"Electricity Maps has given no figure for {self.zone} for over "
                                f"{STALE_S / 3600:g} h: using {self.fallback.value.source} instead.")  # fmt: skip
        return self.fallback.value

    def fetch(self) -> None:
        """Ask the API once; keep the figure, or keep the last one and say why (never raises)."""
        token = os.environ.get(TOKEN_ENV, "").strip()  # a secret file's trailing newline is not part of it
        if not token:
            self._once("token", f"Electricity Maps: ${TOKEN_ENV} is not set; using {self.fallback.value.source}.")
            return
        request = urllib.request.Request(self.url, headers={"auth-token": token})
        try:
            answer = json.loads(_read_bounded(request).decode("utf-8"))
            given = answer["carbonIntensity"]
            value = float(given) if isinstance(given, (int, float)) and not isinstance(given, bool) else math.nan
            if not 0 <= value <= MAX_G_PER_KWH:  # NaN fails too
                raise ValueError(f"carbonIntensity {given!r} is not a number in [0, {MAX_G_PER_KWH:g}]")
        except urllib.error.HTTPError as err:
            why = {401: "the token was refused (401)", 429: "rate limited (429)"}.get(err.code, f"HTTP {err.code}")
            self._failed(why + (" (a redirect, not followed)" if 300 <= err.code < 400 else ""))
            return
        except Exception as err:  # noqa: BLE001 - no network, timeout, malformed answer: keep the last figure
            self._failed(_without(token, f"{type(err).__name__}: {err}"))
            return
        stamp = answer.get("datetime", "")
        source = f"Electricity Maps {answer.get('zone', self.zone)} at {stamp}" + (
            " (estimated)" if answer.get("isEstimated") else ""
        )
        with self._lock:
            self._latest = Value(value, source, float(self.clock()))  # type: ignore[operator]

    def _failed(self, why: str) -> None:
        keeping = "the last figure" if self._latest is not None else self.fallback.value.source
        self._once("failed", f"Electricity Maps ({self.zone}) did not answer: {why}; using {keeping} until it does.")

    def _once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._notices.append(Notice("warn", text))

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
            return
        self._stop = threading.Event()  # a new one: a thread still finishing a request keeps its own, set
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="energy-intensity", daemon=True)
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.fetch()
            if stop.wait(REFRESH_S):
                return

    def stop(self) -> None:
        self._stop.set()  # a request in flight ends by its own deadline; nothing waits for it

    def describe(self) -> dict[str, object]:
        return {"kind": "electricity_maps", "zone": self.zone, "refresh_s": REFRESH_S,
                "fallback": self.fallback.value.source}  # fmt: skip


def _read_bounded(request: urllib.request.Request) -> bytes:
    """The answer's body: at most `MAX_ANSWER_BYTES`, within about 2 x `TIMEOUT_S` in all
    (a server that drips bytes cannot hold the thread), redirects refused."""
    deadline = time.monotonic() + TIMEOUT_S
    body = b""
    with _OPENER.open(request, timeout=TIMEOUT_S) as response:
        while chunk := response.read1(4096):  # one recv at a time: a drip is seen at once
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise ValueError(f"an answer of over {MAX_ANSWER_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the answer took over {TIMEOUT_S:g} s")
    return body


def _without(token: str, text: str) -> str:
    """``text``, or only its first word when the token shows in it in any form (escaped, bytes)."""
    forms = (token, repr(token)[1:-1], repr(token.encode())[2:-1])
    return text.split(":")[0] + ": (details withheld: they hold the token)" if any(f in text for f in forms) else text
