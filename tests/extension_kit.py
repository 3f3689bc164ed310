"""Loopback servers and registry hygiene for the examples in examples/extensions/ (docs/extending.md).

`GraphqlOrigin` answers GraphQL POSTs the way a publisher's API would; `DavServer` is a small WebDAV
folder (MKCOL, PUT, GET with ranges, DELETE) on disk. Both bind 127.0.0.1 only. `extensions_loaded`
imports the examples through C2D_EXTENSIONS (as a deployment does) and, afterwards, forgets what they
registered, so other tests see the engine's built-in registries.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "extensions"
SECRET_PATH = "/s3cr3t-graphql-endpoint"
# What the origin's one "table" holds; the query picks a column.
ROWS = [{"city": "Lisbon", "sales": 12}, {"city": "Porto", "sales": 30}, {"city": "Faro", "sales": 7}]


@contextmanager
def extensions_loaded(*modules: str) -> Iterator[None]:
    """`C2D_EXTENSIONS=<modules>` from examples/extensions, set and loaded now; undone on exit."""
    from c2d_core import extensions, fetch, result_stores

    sources, stores = dict(fetch.FILE_SOURCES), dict(result_stores.RESULT_STORE_TYPES)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("C2D_EXTENSIONS", ",".join(modules))
            monkeypatch.setenv("C2D_EXTENSIONS_PATH", str(EXAMPLES))
            extensions.load_extensions()
            yield
    finally:
        fetch.FILE_SOURCES.clear()
        fetch.FILE_SOURCES.update(sources)
        result_stores.RESULT_STORE_TYPES.clear()
        result_stores.RESULT_STORE_TYPES.update(stores)
        for name in modules:
            extensions._loaded.discard(name)
            sys.modules.pop(name, None)
        if str(EXAMPLES) in sys.path:
            sys.path.remove(str(EXAMPLES))


# --- a GraphQL origin -----------------------------------------------------------------------------


@dataclass
class GraphqlOrigin:
    server: ThreadingHTTPServer
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{SECRET_PATH}"


def _graphql_handler(origin: GraphqlOrigin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
            origin.bodies.append(body)
            origin.headers.append({key.lower(): value for key, value in self.headers.items()})
            if self.path != SECRET_PATH:
                self.send_error(404)
                return
            # A toy resolver: `{ rows { <column> } }` selects one column; variables.limit cuts rows.
            column = "sales" if "sales" in body.get("query", "") else "city"
            limit = int((body.get("variables") or {}).get("limit", len(ROWS)))
            answer = {"data": {"rows": [{column: row[column]} for row in ROWS[:limit]]}}
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@contextmanager
def graphql_origin() -> Iterator[GraphqlOrigin]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    origin = GraphqlOrigin(server)
    server.RequestHandlerClass = _graphql_handler(origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()


# --- a WebDAV folder ------------------------------------------------------------------------------


def _dav_handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _path(self) -> Path:
            parts = [part for part in self.path.split("?")[0].split("/") if part]
            if any(part in (".", "..") for part in parts):
                raise PermissionError(self.path)
            return root.joinpath(*parts)

        def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_MKCOL(self) -> None:
            path = self._path()
            if path.exists():
                self._answer(405)
                return
            path.mkdir(parents=False)
            self._answer(201)

        def _body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("content-length", "0")))

        def do_PUT(self) -> None:
            path = self._path()
            data = self._body()
            if not path.parent.is_dir():
                self._answer(409)  # WebDAV: the collection must exist first
                return
            path.write_bytes(data)
            self._answer(201)

        def do_GET(self) -> None:
            path = self._path()
            if not path.is_file():
                self._answer(404)
                return
            data = path.read_bytes()
            wanted = self.headers.get("range", "")
            if wanted.startswith("bytes="):
                first, _, last = wanted.removeprefix("bytes=").partition("-")
                start, end = int(first), min(int(last), len(data) - 1)
                span = f"bytes {start}-{end}/{len(data)}"
                self._answer(206, data[start : end + 1], {"Content-Range": span})
                return
            self._answer(200, data)

        def do_DELETE(self) -> None:
            path = self._path()
            if not path.exists():
                self._answer(404)
                return
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            self._answer(204)

    return Handler


@dataclass
class DavServer:
    server: ThreadingHTTPServer
    root: Path

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/c2d"


@contextmanager
def dav_server(root: Path) -> Iterator[DavServer]:
    (root / "c2d").mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _dav_handler(root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield DavServer(server, root / "c2d")
    finally:
        server.shutdown()
        server.server_close()
