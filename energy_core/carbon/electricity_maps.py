"""The live carbon intensity of a zone from the Electricity Maps API v3 (a `Factor`), and its forecast.

Refreshed every `REFRESH_S` on a thread of its own (never the training thread). On any
failure it keeps the last figure (one notice), and without a figure for `STALE_S` it falls
back to the location lookup (one notice). The token comes from ``$ELECTRICITYMAPS_API_KEY``
and is never logged: it is stripped, never sent on through a redirect, and withheld from
any error text that holds it. Answers are bounded in size and time.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from energy_core.carbon.factor import Factor, Fixed, Value
from energy_core.notices import printable
from energy_core.units import MAX_G_PER_KWH

TOKEN_ENV = "ELECTRICITYMAPS_API_KEY"
URL_ENV = "ELECTRICITYMAPS_API_URL"  # another endpoint (a proxy, a test server)
DEFAULT_URL = "https://api.electricitymap.org/v3"
REFRESH_S = 900.0  # Electricity Maps' values are hourly: every 15 minutes is often enough
TIMEOUT_S = 5.0
STALE_S = 3 * 3600.0  # a live figure older than this gives way to the location lookup
MAX_ANSWER_BYTES = 64 * 1024  # the API's answer is a few hundred bytes
ZONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FORECAST_HOURS = 72  # the longest horizon the forecast endpoint gives


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would send the token on to wherever a redirect points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx code


class _Deadline:
    """One request's time limit, from the connection to the last byte.

    A socket's timeout bounds each read, not the request: a server that sends one byte
    every few seconds would hold it for ever. At the deadline a timer shuts the request's
    sockets down, which ends a read blocked anywhere (status line, headers, body, TLS); each
    connection attempt is given the time left as its own timeout.
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def left(self) -> float:
        return max(0.001, self.end - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    """Shut the connection's descriptor down (a TLS socket's too): a blocked read returns at once."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Watched(http.client.HTTPConnection):
    """A connection whose socket its `_Deadline` can shut down (set by the handler that makes it)."""

    deadline: _Deadline

    def connect(self) -> None:
        self.timeout = self.deadline.left()
        super().connect()
        self.deadline.watch(self.sock)  # before a TLS handshake, which reads from it


class _WatchedTls(http.client.HTTPSConnection, _Watched):
    def connect(self) -> None:
        super().connect()  # _Watched.connect, then the TLS handshake
        self.deadline.watch(self.sock)  # the TLS socket took the descriptor over


class _Http(urllib.request.HTTPHandler):
    """Opens `_Watched` connections under one deadline."""

    def __init__(self, deadline: _Deadline, kind: type[_Watched] = _Watched) -> None:
        super().__init__()
        self.deadline, self.kind = deadline, kind

    def connection(self, host: str, **arguments: Any) -> _Watched:
        made = self.kind(host, **arguments)
        made.deadline = self.deadline
        return made

    def http_open(self, req):
        return self.do_open(self.connection, req)


class _Https(urllib.request.HTTPSHandler):
    """Opens `_WatchedTls` connections under one deadline (the system's certificates by default)."""

    def __init__(self, deadline: _Deadline, context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.opens = _Http(deadline, _WatchedTls)
        self.tls = context or ssl.create_default_context()

    def https_open(self, req):
        return self.do_open(self.opens.connection, req, context=self.tls)


class ElectricityMaps(Factor):
    """The live carbon intensity of a zone from Electricity Maps, refreshed on its own thread.

    Args:
        zone: The zone, e.g. ``"FR"`` or ``"US-CAL-CISO"``.
        fallback: The figure used before the first answer and once the last one is stale.
        clock: Unix time (``time.time``); tests may drive it.
    """

    name = "electricity_maps_zone"
    # a copy refreshes from its own `start`
    MADE_AGAIN = {**Factor.MADE_AGAIN, "_stop": threading.Event, "_thread": lambda: None, "_lock": threading.Lock}

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
        source = f"Electricity Maps {self.zone}{_when(answer.get('datetime'))}" + (
            " (estimated)" if answer.get("isEstimated") is True else ""
        )
        with self._lock:
            self._latest = Value(value, source, float(self.clock()))  # type: ignore[operator]

    def _failed(self, why: str) -> None:
        keeping = "the last figure" if self._latest is not None else self.fallback.value.source
        why = printable(why)  # an error's text may quote the server (a bad status line)
        self._once("failed", f"Electricity Maps ({self.zone}) did not answer: {why}; using {keeping} until it does.")

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
    """The answer's body: at most `MAX_ANSWER_BYTES`, within `TIMEOUT_S` from the connection to
    the last byte (a server that drips bytes, in its headers or its body, cannot hold the thread),
    redirects refused."""
    with _Deadline(TIMEOUT_S) as deadline:
        opener = urllib.request.build_opener(_NoRedirect, _Http(deadline), _Https(deadline))
        body = b""
        try:
            with opener.open(request, timeout=TIMEOUT_S) as response:
                while chunk := response.read1(4096):  # one recv at a time: a drip is seen at once
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise ValueError(f"an answer of over {MAX_ANSWER_BYTES} bytes")
        except (OSError, http.client.HTTPException):
            if not deadline.expired:
                raise
        if deadline.expired:  # the shut-down socket ended the answer early, however it looked
            raise TimeoutError(f"the answer took over {TIMEOUT_S:g} s")
    return body


def _when(stamp: object) -> str:
    """ " at <the answer's time>", rewritten from the parsed ISO 8601 time (the server's text is
    never shown as it is), or "" when it is not one."""
    try:
        return f" at {datetime.fromisoformat(str(stamp).replace('Z', '+00:00')).isoformat()}"
    except ValueError:
        return ""


def _without(token: str, text: str) -> str:
    """``text``, or only its first word when the token shows in it in any form (escaped, bytes)."""
    forms = (token, repr(token)[1:-1], repr(token.encode())[2:-1])
    return text.split(":")[0] + ": (details withheld: they hold the token)" if any(f in text for f in forms) else text


def fetch_forecast(zone: str, horizon_hours: int = FORECAST_HOURS) -> tuple[list[tuple[float, float]], str]:
    """The zone's forecast from ``/carbon-intensity/forecast``: ``([(unix time, g/kWh), ...], "")``,
    or ``([], why)`` when there is none. Never raises; the token never shows in ``why``.

    Bounded like the live figure (size, time, no redirect); every value must be a number in
    [0, `MAX_G_PER_KWH`] with an ISO 8601 time, or the answer is refused whole.
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return [], f"${TOKEN_ENV} is not set"
    query = urllib.parse.urlencode({"zone": zone, "horizonHours": horizon_hours})
    url = os.environ.get(URL_ENV, DEFAULT_URL).rstrip("/") + "/carbon-intensity/forecast?" + query
    try:
        answer = json.loads(_read_bounded(urllib.request.Request(url, headers={"auth-token": token})).decode("utf-8"))
        points = []
        for entry in answer["forecast"]:
            given = entry["carbonIntensity"]
            if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 <= given <= MAX_G_PER_KWH:
                raise ValueError(f"carbonIntensity {given!r} is not a number in [0, {MAX_G_PER_KWH:g}]")
            stamp = datetime.fromisoformat(str(entry["datetime"]).replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                raise ValueError(f"datetime {entry['datetime']!r} has no UTC offset")
            points.append((stamp.timestamp(), float(given)))
        if not points:
            raise ValueError("an empty forecast")
    except urllib.error.HTTPError as err:
        why = {401: "the token was refused (401)", 429: "rate limited (429)"}.get(err.code, f"HTTP {err.code}")
        return [], why + (" (a redirect, not followed)" if 300 <= err.code < 400 else "")
    except Exception as err:  # noqa: BLE001 - no network, timeout, malformed answer: no forecast
        return [], _without(token, f"{type(err).__name__}: {err}")
    return sorted(points), ""
