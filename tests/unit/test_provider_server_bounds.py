"""The Provider's server bounds over real sockets on loopback: `python -m provider_api.server` (what
`c2d dev up` and the image run) with the real app, both of uvicorn's HTTP parsers.

Slow clients (issue 12, item 8): connections that trickle header bytes, or send nothing, are closed
once the head deadline passes; a slow body and an idle kept-alive connection are not; a head over the
size cap is refused; connections beyond the concurrency limit get uvicorn's 503. A short deadline is
set through PROVIDER_SERVER_HEAD_TIMEOUT so the tests stay quick; the waits below are hang guards
(far above the deadline), not timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from provider_api.server import ServerSettings, guarded_protocol

HEAD_TIMEOUT = 1.0
# How long a test waits for something the server must do within HEAD_TIMEOUT: a hang guard.
HANG_GUARD = 60.0
PARSERS = ["h11", "httptools"]
Starter = Callable[..., int]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def start_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starter]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(parser: str = "auto", **server_env: str) -> int:
        base = tmp_path_factory.mktemp("provider")
        port = free_port()
        env = {
            **os.environ,
            "C2D_HOME": str(base / "home"),
            "PROVIDER_ENVIRONMENT": "development",
            "PROVIDER_NONCE_DB_URL": f"sqlite:///{base / 'nonces.db'}",
            **{f"PROVIDER_SERVER_{name.upper()}": value for name, value in server_env.items()},
        }
        env.pop("PROVIDER_PRIVATE_KEY", None)
        command = [sys.executable, "-m", "provider_api.server", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--http", parser, "--log-level", "warning", "--no-access-log"]
        log_path = base / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        deadline = time.monotonic() + HANG_GUARD
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                return port
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Provider did not start:\n" + log_path.read_text())
                time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module", params=PARSERS)
def bounded_port(request: pytest.FixtureRequest, start_provider: Starter) -> int:
    return start_provider(request.param, head_timeout=str(HEAD_TIMEOUT))


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """One response (head and a Content-Length body), or what came before the server closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset), waiting at most the hang guard."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


GET_ROOT = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _slow_client(port: int, trickle: bool) -> bytes:
    """A slow-loris client: opens a connection and sends one header byte every 0.2 s for ever (or,
    with `trickle` off, nothing at all); returns what the server sent before it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reading = asyncio.ensure_future(reader.read(4096))
    try:
        if trickle:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while not reading.done():
            if trickle:
                writer.write(b"a")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            await asyncio.wait({reading}, timeout=0.2)
        try:
            return reading.result()
        except ConnectionError:
            return b"<reset>"
    finally:
        writer.close()


async def _slow_clients(port: int, tricklers: int, silent: int) -> list[bytes]:
    clients = [_slow_client(port, trickle=True) for _ in range(tricklers)]
    clients += [_slow_client(port, trickle=False) for _ in range(silent)]
    return await asyncio.wait_for(asyncio.gather(*clients), timeout=HANG_GUARD)


def test_300_trickling_connections_are_closed_after_the_head_deadline(bounded_port: int) -> None:
    try:
        answers = asyncio.run(_slow_clients(bounded_port, tricklers=300, silent=20))
    except TimeoutError:
        pytest.fail(f"slow connections were still open {HANG_GUARD:.0f} s after opening")
    trickled, silent = answers[:300], answers[300:]
    # Each trickler was still sending when it was closed: answered 408 (or reset, if it was mid-write).
    assert all(answer.startswith(b"HTTP/1.1 408 ") or answer == b"<reset>" for answer in trickled)
    assert sum(answer.startswith(b"HTTP/1.1 408 ") for answer in trickled) > 0
    # One that asked nothing is closed without an answer.
    assert silent == [b""] * 20
    # The server is none the worse for them.
    assert httpx.get(f"http://127.0.0.1:{bounded_port}/", timeout=10).status_code == 200


def test_an_idle_kept_alive_connection_outlives_the_head_deadline_but_not_a_trickled_head(
    bounded_port: int,
) -> None:
    with connect(bounded_port) as sock:
        sock.sendall(GET_ROOT)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        # Idle between requests is keep-alive time (65 s), not head time.
        time.sleep(HEAD_TIMEOUT * 2.5)
        sock.sendall(GET_ROOT)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        # The next head begins and never ends.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert closed_by_server(sock)


def test_a_slow_body_is_not_cut_by_the_head_deadline(bounded_port: int) -> None:
    # The deadline covers the head only; the body is the application's to read (and the reverse
    # proxy's to time out, docs/deploy-kubernetes.md).
    body = b"hello, slowly"
    with connect(bounded_port) as sock:
        head = (
            b"POST /api/services/encrypt?chainId=8996 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(head)
        for start in range(0, len(body), 5):
            time.sleep(HEAD_TIMEOUT)
            sock.sendall(body[start : start + 5])
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]


def test_a_head_over_the_size_cap_is_refused(bounded_port: int) -> None:
    cap = ServerSettings().max_head_bytes
    with connect(bounded_port) as sock:
        # Closed while still sending, the refusal may be lost; the close is not.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (cap * 3) + b"\r\n\r\n")
        try:
            answer = read_response(sock)
        except ConnectionResetError:
            answer = b"<reset>"
        # httptools has no cap of its own (this guard's 431); h11's buffer cap answers 400.
        assert answer == b"<reset>" or answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer[:100]
        assert answer == b"<reset>" or closed_by_server(sock)


def test_a_head_within_the_cap_is_served(bounded_port: int) -> None:
    padding = "a" * (ServerSettings().max_head_bytes // 2)
    response = httpx.get(f"http://127.0.0.1:{bounded_port}/", headers={"X-Pad": padding}, timeout=10)
    assert response.status_code == 200


def test_connections_beyond_the_concurrency_limit_get_503(start_provider: Starter) -> None:
    limit = 10
    # A long head deadline: the idle connections must hold their slots while the test asks.
    port = start_provider(limit_concurrency=str(limit), head_timeout="120")
    holders = [connect(port) for _ in range(limit)]
    try:
        with connect(port) as sock:
            sock.sendall(GET_ROOT)
            answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
    finally:
        for holder in holders:
            holder.close()
    # With the slots free again the same request is served.
    deadline = time.monotonic() + HANG_GUARD
    while True:
        status = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_the_guarded_protocol_follows_uvicorns_parser_choice() -> None:
    settings = ServerSettings(head_timeout=3, max_head_bytes=8192)
    for parser in PARSERS:
        protocol = guarded_protocol(settings, parser)
        assert protocol.head_timeout == 3 and protocol.max_head_bytes == 8192  # type: ignore[attr-defined]
    # auto = httptools where installed (it is here: dagster-webserver pulls in uvicorn[standard]).
    assert "HttpTools" in guarded_protocol(settings).__name__
    with pytest.raises(ValueError, match="unknown or unavailable HTTP parser"):
        guarded_protocol(settings, "zttp")
