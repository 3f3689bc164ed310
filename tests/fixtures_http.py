"""A real HTTP data source on 127.0.0.1 for fetcher and configure-pod tests (no mocks of httpx).

Every path starts with a recognisable secret prefix, so tests can assert that no log or error ever
repeats any part of a location.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

SECRET_PREFIX = "/s3cr3t-bucket-path"
CSV_BYTES = b"id,value\n1,10\n2,20\n3,30\n"
BIG_SIZE = 3 * 1024 * 1024 + 17
ALGORITHM_CODE = b"#!/usr/bin/env python3\nprint('hello from a published algorithm')\n"


def big_bytes() -> bytes:
    block = hashlib.sha256(b"c2d").digest() * 32  # 1 KiB, deterministic
    return (block * (BIG_SIZE // len(block) + 1))[:BIG_SIZE]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpOrigin:
    host: str
    port: int
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}{SECRET_PREFIX}/{name}"

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for item in self.requests if item.path == f"{SECRET_PREFIX}/{name}")

    def last(self, name: str) -> Recorded:
        with self.lock:
            return [item for item in self.requests if item.path == f"{SECRET_PREFIX}/{name}"][-1]

    def leaks_in(self, text: str) -> list[str]:
        """Which parts of this origin's locations appear in `text` (empty when none)."""
        pieces = [self.host, f":{self.port}", SECRET_PREFIX, "s3cr3t", "localhost", "http://"]
        return [piece for piece in pieces if piece in text]


def _make_handler(origin: HttpOrigin) -> type[BaseHTTPRequestHandler]:
    big = big_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def _record(self) -> Recorded:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            item = Recorded(self.command, parts.path, parts.query, dict(self.headers.items()), body)
            with origin.lock:
                origin.requests.append(item)
            return item

        def _send(self, status: int, body: bytes, length: bool = True, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            item = self._record()
            name = item.path.removeprefix(SECRET_PREFIX + "/")
            if name == "data.csv":
                self._send(200, CSV_BYTES)
            elif name == "other.csv":
                self._send(200, b"a,b\nx,y\n")
            elif name == "algorithm.py":
                self._send(200, ALGORITHM_CODE)
            elif name == "big.bin":
                self._send(200, big)
            elif name == "big-unsized.bin":
                # HTTP/1.0 without Content-Length: the body ends when the connection closes.
                self._send(200, big, length=False)
            elif name == "lying-length.bin":
                # Declares 10 bytes, then keeps writing: HTTP framing, not the server, decides.
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.write(big)
            elif name == "flaky.csv":
                if origin.count("flaky.csv") == 1:
                    self._send(500, b"try again")
                else:
                    self._send(200, CSV_BYTES)
            elif name == "busy.csv":
                if origin.count("busy.csv") == 1:
                    self._send(429, b"slow down", Retry_After="0")
                else:
                    self._send(200, CSV_BYTES)
            elif name == "broken.csv":
                self._send(503, b"down")
            elif name == "slow.csv":
                origin.release.wait(5)  # past any read timeout the tests use
                self._send(200, CSV_BYTES)
            elif name == "trickle.bin":
                self.send_response(200)
                self.end_headers()
                for _ in range(100):
                    if origin.release.is_set():
                        break
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
                    time.sleep(0.05)
            elif name == "redirect.csv":
                self._send(302, b"", Location=f"{SECRET_PREFIX}/data.csv")
            elif name == "redirect-loop":
                self._send(302, b"", Location=f"{SECRET_PREFIX}/redirect-loop")
            elif name == "redirect-file":
                self._send(302, b"", Location="file:///etc/passwd")
            elif name == "echo":
                self._send(200, f"{item.method} {item.query}\n".encode() + item.body)
            else:
                self._send(404, b"no such file")

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up mid-body (size caps, timeouts) is what several tests are about.
        pass


@pytest.fixture
def http_origin() -> Iterator[HttpOrigin]:
    """A fresh threaded HTTP server per test (fresh request counters), shut down afterwards."""
    server = _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    origin = HttpOrigin(host="127.0.0.1", port=server.server_address[1])
    server.RequestHandlerClass = _make_handler(origin)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        origin.release.set()  # wake slow handlers so their threads end
        server.shutdown()
        server.server_close()
        thread.join(5)
