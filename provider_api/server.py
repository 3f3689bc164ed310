"""The Provider's HTTP server: uvicorn with the bounds a public endpoint needs, set in one place.

`python -m provider_api.server --host H --port P` is how `c2d dev up` and the Provider image start the
Provider. Besides uvicorn's own bounds (connections, keep-alive, backlog) it adds the one uvicorn lacks:
a deadline and a size cap for each request head. Neither of uvicorn's parsers has one (h11 caps the
size only, httptools neither), so a client that opens a connection and trickles header bytes, or sends
nothing at all, would hold it, and a slot of `limit_concurrency`, for ever.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import MutableMapping, Sequence
from typing import Any, ClassVar

import h11
import uvicorn
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.protocols.http.h11_impl import H11Protocol

KIB = 1024
MAX_AUTO_WORKERS = 4


class ServerSettings(BaseSettings):
    """The server's bounds, from `PROVIDER_SERVER_*` variables; the defaults are what production runs."""

    model_config = SettingsConfigDict(env_prefix="PROVIDER_SERVER_", extra="ignore")

    # Seconds a request head (request line and headers) may take to arrive, from the connection's
    # opening or from the first byte of a later request on a kept-alive one. A client or proxy sends a
    # head in one write, so a few seconds is generous; a slow-loris client is closed after this long.
    head_timeout: float = Field(default=10.0, gt=0, le=300)
    # Bytes a request head may have. Ocean's requests put at most a signature and a few ids in the
    # query; browsers' cookies stay far below this. Over it: 431 (httptools) or 400 (h11), closed.
    max_head_bytes: int = Field(default=64 * KIB, ge=4 * KIB, le=1024 * KIB)
    # Open connections (idle kept-alive ones included) plus running requests above which uvicorn
    # answers 503 to a new request. Keep it below the process's file descriptor limit, and above the
    # reverse proxy's pool of kept-alive upstream connections (docs/deploy-kubernetes.md).
    limit_concurrency: int = Field(default=1000, ge=2, le=100_000)
    # uvicorn closes an idle keep-alive connection after 5 s by default: a client that reuses it just
    # then (a consumer polling status, a load balancer's pool) gets a reset instead of an answer
    # (bench/load.py saw them). Idle connections are kept longer than a balancer's usual 60 s.
    keep_alive: int = Field(default=65, ge=1, le=3600)
    # Connections the kernel queues before uvicorn accepts them (capped by net.core.somaxconn).
    backlog: int = Field(default=2048, ge=1, le=65535)
    # Server processes sharing the port (uvicorn workers); 0: one per CPU this process may use, at
    # most MAX_AUTO_WORKERS. Each is a whole Provider (its own caches and pools, some 200 MB with
    # Dagster's storage API loaded); the nonce and claim stores are SQL, safe across processes.
    # One by default, as the Provider image runs under a CPU limit of its own (scale with replicas).
    workers: int = Field(default=1, ge=0, le=64)


class HeadDeadline(asyncio.Protocol):
    """A mixin for uvicorn's HTTP protocols: every request head must arrive within `head_timeout`
    seconds and `max_head_bytes` bytes, or the connection is answered 408 / 431 and closed.

    The deadline runs while the connection waits for a head it has begun to receive, and from the
    moment a connection opens (one that never sends a byte is closed too). Idle time between requests
    stays under uvicorn's keep-alive timeout, and request bodies under the application's reads.
    """

    head_timeout: ClassVar[float] = ServerSettings.model_fields["head_timeout"].default
    max_head_bytes: ClassVar[int] = ServerSettings.model_fields["max_head_bytes"].default

    # Set by uvicorn's protocol classes, which this mixin precedes in the MRO.
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes: int = 0

    def _receiving_body(self) -> bool:
        """Whether the parser is inside a request body (bytes that arrive are not a head)."""
        raise NotImplementedError

    def _awaiting_head(self) -> bool:
        in_flight = self.cycle is not None and not self.cycle.response_complete
        return not in_flight and not self._receiving_body()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or not self._awaiting_head():
            # A complete head (the request is the application's now), a body, or a closed connection.
            self._disarm_head_deadline()
            return
        # An incomplete head, counted per read: the read that completes a head is not counted, so
        # a head with a body in the same read is never mistaken for an oversized head.
        if self._head_timer is None:
            self._arm_head_deadline()
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._refuse(431, "Request Header Fields Too Large", "the request head is too large")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = 0

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        if self._head_bytes:
            self._refuse(408, "Request Timeout", "the request head did not arrive in time")
        else:
            # Nothing was asked: there is no one to answer (a pre-opened or abandoned connection).
            self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        # Written as bytes, not through the parser's state machine: the connection closes right after.
        body = message.encode("ascii")
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
        self._disarm_head_deadline()


class GuardedH11Protocol(HeadDeadline, H11Protocol):
    def _receiving_body(self) -> bool:
        return bool(self.conn.their_state is h11.SEND_BODY)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is optional for uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment, misc]

if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(HeadDeadline, HttpToolsProtocol):
        _in_body: bool = False

        def _receiving_body(self) -> bool:
            return self._in_body

        def on_headers_complete(self) -> None:
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()


def guarded_protocol(settings: ServerSettings, parser: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP protocol class uvicorn should use: its faster parser (httptools) when installed, as
    uvicorn's `auto` picks, else h11; with `settings`' head deadline and size cap."""
    base: type[HeadDeadline]
    if parser == "h11" or (parser == "auto" and HttpToolsProtocol is None):
        base = GuardedH11Protocol
    elif parser in ("auto", "httptools") and HttpToolsProtocol is not None:
        base = GuardedHttpToolsProtocol
    else:
        raise ValueError(f"unknown or unavailable HTTP parser {parser!r}; use auto, h11 or httptools")
    bounds = {"head_timeout": settings.head_timeout, "max_head_bytes": settings.max_head_bytes}
    return type(base.__name__, (base,), bounds)


# For more than one worker: uvicorn hands its config to each worker process, which imports the
# protocol class by name; these names build it there from the same PROVIDER_SERVER_* environment.
_ENV_PROTOCOLS = {"EnvGuardedAuto": "auto", "EnvGuardedH11": "h11", "EnvGuardedHttpTools": "httptools"}


def __getattr__(name: str) -> Any:
    if name in _ENV_PROTOCOLS:
        protocol = guarded_protocol(ServerSettings(), _ENV_PROTOCOLS[name])
        globals()[name] = protocol
        return protocol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def worker_count(requested: int) -> int:
    """`requested` server processes, or for 0 one per CPU this process may run on (at most
    MAX_AUTO_WORKERS)."""
    if requested:
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_AUTO_WORKERS))


def several_workers_env(environ: MutableMapping[str, str]) -> None:
    """What server processes sharing a port need in their environment (they inherit it).

    Each process keeps its own status cache. A poll answered by one process after another has seen
    the job move on would show an older state (a finished job read back as running), so with several
    processes an unfinished job is not kept between requests (concurrent reads of one job are still
    one read; finished jobs are still kept). An explicit PROVIDER_STATUS_CACHE_SECONDS is respected.
    """
    environ.setdefault("PROVIDER_STATUS_CACHE_SECONDS", "0")


def server_config(
    host: str,
    port: int,
    settings: ServerSettings | None = None,
    *,
    parser: str = "auto",
    access_log: bool = True,
    proxy_headers: bool = True,
    log_level: str = "info",
    workers: int | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration for the Provider app with the server bounds of `settings`, and
    `workers` processes (None: settings.workers; 0: one per CPU)."""
    settings = settings or ServerSettings()
    count = worker_count(settings.workers if workers is None else workers)
    http: type[asyncio.Protocol] | str = guarded_protocol(settings, parser)
    if count > 1:
        name = next(name for name, kind in _ENV_PROTOCOLS.items() if kind == parser)
        http = f"{__name__}:{name}"
    return uvicorn.Config(
        "provider_api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=count,
        http=http,
        # Also h11's own buffer cap, so either parser refuses an oversized head.
        h11_max_incomplete_event_size=settings.max_head_bytes,
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.keep_alive,
        backlog=settings.backlog,
        access_log=access_log,
        # Trusted only from FORWARDED_ALLOW_IPS (uvicorn's default: 127.0.0.1).
        proxy_headers=proxy_headers,
        log_level=log_level,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provider_api.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto", help="HTTP parser")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--no-proxy-headers", action="store_true")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--workers",
        type=lambda text: 0 if text == "auto" else int(text),
        default=None,
        help="server processes: a number, or auto (one per CPU, at most 4); default PROVIDER_SERVER_WORKERS",
    )
    args = parser.parse_args(argv)
    config = server_config(
        args.host,
        args.port,
        parser=args.http,
        access_log=not args.no_access_log,
        proxy_headers=not args.no_proxy_headers,
        log_level=args.log_level,
        workers=args.workers,
    )
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        several_workers_env(os.environ)

        # As uvicorn.run does: the supervisor binds the port once and each worker serves on it.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
