"""Is each part of the local stack up, and bring back only the parts that died.

`check` asks every part as a user would: its process is alive *and* it answers (anvil `eth_chainId`,
the webserver `/server_info`, the daemon's heartbeat through the webserver, the Provider `GET /`, the
data origin, the warm run worker's socket). `restart_dead` restarts each dead part on its recorded
port, so URLs already written into published assets (the Provider's, the origin's) stay right.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2d_cli.processes import alive

if TYPE_CHECKING:
    from c2d_cli.stack import Stack

TIMEOUT = 3.0
_DAEMON_QUERY = (
    '{ instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") { healthy } } } }'
)


@dataclass(frozen=True)
class PartHealth:
    name: str
    pid: int
    alive: bool
    healthy: bool
    url: str
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _answers(probe: Callable[[], bool]) -> tuple[bool, str]:
    import httpx

    try:
        return (True, "answers") if probe() else (False, "answers, but not as expected")
    except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as error:
        return False, f"does not answer ({type(error).__name__})"


def _parts(stack: Stack) -> list[tuple[str, int, str, Callable[[], bool]]]:
    import httpx

    def rpc() -> bool:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        return (
            int(httpx.post(stack.rpc_url, json=body, timeout=TIMEOUT).json()["result"], 16) == stack.chain_id
        )

    def webserver() -> bool:
        return httpx.get(f"{stack.webserver_url}/server_info", timeout=TIMEOUT).status_code == 200

    def daemon() -> bool:
        answer = httpx.post(f"{stack.webserver_url}/graphql", json={"query": _DAEMON_QUERY}, timeout=TIMEOUT)
        return bool(answer.json()["data"]["instance"]["daemonHealth"]["daemonStatus"]["healthy"])

    def provider() -> bool:
        return httpx.get(f"{stack.provider_url}/", timeout=TIMEOUT).status_code == 200

    def origin() -> bool:
        return httpx.head(f"{stack.origin_url}/data/weather.csv", timeout=TIMEOUT).status_code == 200

    def worker() -> bool:
        from c2d_cli import stack as stack_module

        # Read by name: the warm run worker is newer than some stacks' stack.json.
        path = str(Path(stack.home) / getattr(stack_module, "WORKER_SOCKET"))  # noqa: B009
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            return probe.connect_ex(path) == 0

    parts = [
        ("anvil", stack.anvil_pid, stack.rpc_url, rpc),
        ("webserver", stack.webserver_pid, stack.webserver_url, webserver),
        ("daemon", stack.daemon_pid, "", daemon),
        ("provider", stack.provider_pid, stack.provider_url, provider),
    ]
    if getattr(stack, "origin_pid", 0):
        parts.append(("origin", stack.origin_pid, stack.origin_url, origin))
    if getattr(stack, "worker_pid", 0):
        parts.append(("worker", stack.worker_pid, "", worker))
    return parts


def check(stack: Stack) -> list[PartHealth]:
    """Each part of the stack: alive (its pid runs) and healthy (it also answers)."""
    report = []
    for name, pid, url, probe in _parts(stack):
        running = bool(pid) and alive(pid)
        if not running:
            healthy, detail = False, "not running" if pid else "never started"
        elif name == "daemon" and not alive(stack.webserver_pid):
            healthy, detail = False, "cannot tell: its heartbeat is read through the webserver, which is down"
        else:
            healthy, detail = _answers(probe)
        report.append(PartHealth(name, pid, running, healthy, url, detail))
    return report


def restart_dead(home: Path, timeout: float | None = None) -> list[str] | None:
    """Restart the parts of the recorded stack whose process died, each as `up` started it (same port,
    home and environment); the names restarted, or None when that cannot repair it (no stack, the chain
    or both Dagster processes gone), for `up` to start the stack afresh."""
    from c2d_cli import stack as stack_module

    home = home.resolve()
    recorded = stack_module.read_stack(home)
    if recorded is None or not recorded.anvil_pid or not alive(recorded.anvil_pid):
        return None
    dead = [
        name
        for name in stack_module.RESTARTABLE
        if (pid := int(getattr(recorded, f"{name}_pid", 0) or 0)) and not alive(pid)
    ]
    if "webserver" in dead and "daemon" in dead:
        return None  # each one's readiness is read through the other
    # The daemon before the Provider: a restarted webserver waits for the daemon's heartbeat.
    order = ["origin", "worker", "daemon", "webserver", "provider"]
    restarted = []
    for name in sorted(dead, key=lambda part: order.index(part) if part in order else len(order)):
        if timeout is None:
            stack_module.restart(home, name)
        else:
            stack_module.restart(home, name, timeout)
        restarted.append(name)
    return restarted
