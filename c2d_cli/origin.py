"""An HTTP origin for local data: serves one folder on 127.0.0.1, for the configure stage to fetch.

Stands in for a publisher's data server. `LocalOrigin` serves from a thread while a test needs it;
`python -m c2d_cli.origin --dir DIR --port PORT` is the embedded stack's origin process, started and
stopped with the stack, so the demo's assets stay usable after the demo exits. Only the configure stage
is meant to reach it: the algorithm sandbox has no network at all.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def origin_server(folder: Path, port: int = 0) -> ThreadingHTTPServer:
    """A server of `folder` on 127.0.0.1:`port` (0: a free port), serving GET and HEAD only."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


class LocalOrigin:
    def __init__(self, folder: Path) -> None:
        self._server = origin_server(folder)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LocalOrigin:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a folder over HTTP on 127.0.0.1.")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with origin_server(args.dir, args.port) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
