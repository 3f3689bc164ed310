"""The warm run worker's wire: one JSON object per line over a Unix socket in $DAGSTER_HOME, one
request and one answer per connection (launch, terminate, health, ping, reload)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

STATE_DIR = "warm-worker"
SOCKET_NAME = "worker.sock"
RUNS_FILE = "runs.json"
MAX_LINE = 1 << 20  # an ExecuteRunArgs with its instance ref is a few KiB


class WorkerUnreachable(ConnectionError):
    """No warm run worker listens on the socket (not started, dead, or re-executing)."""


def state_dir(dagster_home: str | os.PathLike[str]) -> Path:
    return Path(dagster_home) / STATE_DIR


def default_socket_path(dagster_home: str | os.PathLike[str] | None = None) -> Path:
    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError("DAGSTER_HOME is not set: the warm run worker's socket lives in it")
    return state_dir(home) / SOCKET_NAME


def read_line(sock: socket.socket) -> dict[str, Any]:
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > MAX_LINE:
            raise ValueError(f"a warm worker message is longer than {MAX_LINE} bytes")
    if not buffer:
        raise ConnectionError("the peer closed the connection without a message")
    message = json.loads(buffer)
    if not isinstance(message, dict):
        raise ValueError("a warm worker message must be a JSON object")
    return message


def write_line(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def request(path: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request to the worker and its answer; WorkerUnreachable when nothing listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise WorkerUnreachable(
                f"no warm run worker listens on {path} ({type(error).__name__})"
            ) from error
        try:
            write_line(sock, message)
            return read_line(sock)
        except ConnectionError as error:
            # Reset, or closed without an answer: the worker answers every request it reads, so it
            # went away (died) with this one; a launch is not taken then (its child died with it).
            raise WorkerUnreachable(
                f"the warm run worker on {path} went away without answering ({error})"
            ) from error
