"""A small HTTP relay between the S3 client and moto's server, for faults moto cannot make.

* ``corrupt_uploads``: flips one byte of every upload body that carries an
  ``x-amz-checksum-sha256`` header (damage in transit), then does what S3 does and moto
  5.2 does not: checks the body against the header and answers ``400 BadDigest``
  without storing anything.
* ``fail``: answers matching requests with an S3 error document (``SlowDown`` 503,
  ``InternalError`` 500, ...) instead of relaying them.

Everything else is relayed unchanged, so the backend talks to moto's S3 through it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.email import free_port

Matcher = Callable[[str, str], bool]  # (method, path with query) -> fail it?

_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message></Error>"
)


@dataclass
class Gate:
    """The relay's knobs; ``url`` is its endpoint."""

    url: str = ""
    corrupt_uploads: bool = False
    fail: tuple[Matcher, int, str] | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(gate: Gate, upstream: str) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer_error(self, status: int, code: str, message: str) -> None:
            body = _ERROR.format(code=code, message=message).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            gate.requests.append((self.command, self.path))
            if gate.fail is not None and gate.fail[0](self.command, self.path):
                self._answer_error(gate.fail[1], gate.fail[2], "injected by the test gate")
                return
            claimed = self.headers.get("x-amz-checksum-sha256")
            if gate.corrupt_uploads and claimed and body:
                body = bytes([body[0] ^ 0x01]) + body[1:]
                actual = base64.b64encode(hashlib.sha256(body).digest()).decode()
                if actual != claimed:
                    self._answer_error(
                        400,
                        "BadDigest",
                        "The SHA256 you specified did not match the calculated checksum.",
                    )
                    return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            finally:
                connection.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Relay


@contextmanager
def s3_gate(upstream: str) -> Iterator[Gate]:
    """A relay to ``upstream`` on a free loopback port, for the ``with`` block."""
    gate = Gate()
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(gate, upstream))
    server.daemon_threads = True
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # a client hanging up is fine
    gate.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gate
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
