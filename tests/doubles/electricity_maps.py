"""A stand-in for the Electricity Maps API v3: a real HTTP server on localhost replaying answers.

Each request pops one `Answer` of `Replay.script` (then a normal answer of 55 g/kWh): a
status, a body, a delay before it, headers (a redirect's ``Location``), and optionally a
drip (the body sent a byte at a time). A request for the forecast pops `Replay.forecasts`
instead (then a 404), so that the live figure's thread and a forecast's never take each
other's answers. `Replay.tokens` and `Replay.paths` keep what each request carried.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler


@dataclass
class Answer:
    status: int = 200
    body: str = ""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float = 0.0  # seconds between bytes of the body


class Replay(BaseHTTPRequestHandler):
    """Electricity Maps' answers, one per request."""

    script: list[Answer | tuple[int, str, float]] = []
    forecasts: list[Answer] = []
    tokens: list[str] = []
    paths: list[str] = []

    def do_GET(self) -> None:  # the http.server API names it
        if "/forecast" in self.path:
            item: Answer | tuple[int, str, float] = self.forecasts.pop(0) if self.forecasts else Answer(404, "{}")
        else:
            item = self.script.pop(0) if self.script else Answer(body=self.answer(55.0))
        answer = item if isinstance(item, Answer) else Answer(*item)
        self.tokens.append(self.headers.get("auth-token", ""))
        self.paths.append(self.path)
        time.sleep(answer.delay)
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        body = answer.body.encode()
        if not answer.drip_s:
            self.wfile.write(body)
            return
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            time.sleep(answer.drip_s)

    @staticmethod
    def answer(g: object) -> str:
        return json.dumps({"zone": "FR", "carbonIntensity": g, "datetime": "2026-11-24T10:00:00.000Z",
                           "updatedAt": "2026-11-24T10:05:00.000Z", "isEstimated": True})  # fmt: skip

    def log_message(self, *args: object) -> None:
        pass


def forecast_body(points: list[tuple[str, object]], zone: str = "DE") -> str:
    """The forecast endpoint's answer: ``points`` of (ISO time, g/kWh)."""
    return json.dumps({"zone": zone, "forecast": [{"carbonIntensity": g, "datetime": t} for t, g in points],
                       "updatedAt": "2026-11-24T10:05:00.000Z"})  # fmt: skip
