"""A stand-in for the Electricity Maps API v3: a real HTTP server on localhost replaying answers.

Each request pops one `Answer` of `Replay.script` (then a normal answer of 55 g/kWh): a
status, a body, a delay before it, headers (a redirect's ``Location``), and optionally a
drip (the body, or the status line and headers, sent a byte at a time). A request for the
forecast pops `Replay.forecasts` instead (then a 404), so that the live figure's thread and a
forecast's never take each other's answers. `Replay.tokens` and `Replay.paths` keep what each
request carried. `serve_tls` puts the server behind TLS.
"""

from __future__ import annotations

import datetime
import json
import ssl
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


@dataclass
class Answer:
    status: int = 200
    body: str = ""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float = 0.0  # seconds between bytes of the body
    header_drip_s: float = 0.0  # seconds between bytes of the status line and headers
    status_line: str = ""  # sent instead of "HTTP/1.1 <status> Answer" (a malformed one)


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
        status = answer.status_line or f"HTTP/1.1 {answer.status} Answer"
        head = [status, "Content-Type: application/json", "Connection: close"]
        head += [f"{name}: {value}" for name, value in answer.headers.items()]
        try:
            self._send(("\r\n".join(head) + "\r\n\r\n").encode(), answer.header_drip_s)
            self._send(answer.body.encode(), answer.drip_s)
        except OSError:  # the client hung up (it gave up on a dripping answer)
            self.close_connection = True

    def _send(self, data: bytes, drip_s: float) -> None:
        if not drip_s:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(drip_s)

    @staticmethod
    def answer(g: object) -> str:
        return json.dumps({"zone": "FR", "carbonIntensity": g, "datetime": "2026-11-24T10:00:00.000Z",
                           "updatedAt": "2026-11-24T10:05:00.000Z", "isEstimated": True})  # fmt: skip

    def log_message(self, *args: object) -> None:
        pass


def serve_tls(server: HTTPServer, folder: Path) -> Path:
    """Put ``server`` behind TLS with a new self-signed certificate for ``localhost``; returns
    the certificate's file, for the client to trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return cert_file


def forecast_body(points: list[tuple[str, object]], zone: str = "DE") -> str:
    """The forecast endpoint's answer: ``points`` of (ISO time, g/kWh)."""
    return json.dumps({"zone": zone, "forecast": [{"carbonIntensity": g, "datetime": t} for t, g in points],
                       "updatedAt": "2026-11-24T10:05:00.000Z"})  # fmt: skip
