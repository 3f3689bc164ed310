"""The dev stack's local chain: anvil (from `make tools`) on 127.0.0.1 with the Ocean contracts deployed.

State lives under the stack home: `chain-state.json` (anvil's dump, so a restarted stack keeps its assets),
`addresses.json` (Ocean's address.json shape, network "development") and `logs/anvil.log`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from c2d_cli.processes import alive
from c2d_cli.stack_paths import STACK_LOGS
from c2d_core.chain import DEV_CHAIN_ID

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = PROJECT_ROOT / ".tools"
ANVIL_ENV = "C2D_ANVIL"  # an explicit anvil binary, e.g. one installed by foundryup
STATE_FILE = "chain-state.json"
ADDRESSES_FILE = "addresses.json"
NETWORK = "development"
START_TIMEOUT = 15.0
# How often anvil writes its state besides on exit, so a killed (not stopped) stack loses little.
STATE_INTERVAL_SECONDS = 30

# anvil processes this process started, kept so they are reaped (and not reported as leaked) on stop.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ChainStackError(RuntimeError):
    pass


def _platform_package() -> str:
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform, sys.platform)
    return f"anvil-{system}-{machine}"


def anvil_binary() -> Path:
    """The anvil executable: $C2D_ANVIL, else the npm package's native binary under `.tools/`."""
    override = os.environ.get(ANVIL_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ChainStackError(f"{ANVIL_ENV}={override} is not an executable file")
        return path
    path = TOOLS_DIR / "node_modules" / "@foundry-rs" / _platform_package() / "bin" / "anvil"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ChainStackError(
            f"anvil is not installed (looked for {path}); run `make tools` (needs npm), "
            f"or point {ANVIL_ENV} at an anvil binary"
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def chain_id_at(rpc_url: str, timeout: float = 2.0) -> int | None:
    """The chain id answered at `rpc_url`, or None when nothing answers there."""
    try:
        answer = httpx.post(
            rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        ).json()
        return int(answer["result"], 16)
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def start_anvil(
    home: Path,
    port: int | None = None,
    *,
    persist_state: bool = True,
    chain_id: int = DEV_CHAIN_ID,
    timeout: float = START_TIMEOUT,
) -> tuple[int, str]:
    """Start anvil in its own session; returns (pid, rpc_url) once it answers `eth_chainId`.

    With `persist_state`, anvil loads `<home>/chain-state.json` if present and writes it on SIGTERM (and
    every STATE_INTERVAL_SECONDS). Without `port`, a free port is chosen.
    """
    binary = anvil_binary()
    home.mkdir(parents=True, exist_ok=True)
    (home / STACK_LOGS).mkdir(exist_ok=True)
    if port is None:
        port = _free_port()
    elif _port_taken(port):
        raise ChainStackError(f"port {port} on 127.0.0.1 is taken; choose another port for the chain")
    command = [
        str(binary),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--silent",
    ]
    state_file = home / STATE_FILE
    if persist_state:
        command += ["--state", str(state_file), "--state-interval", str(STATE_INTERVAL_SECONDS)]
    log_path = home / STACK_LOGS / "anvil.log"
    rpc_url = f"http://127.0.0.1:{port}"
    try:
        return _launch(command, log_path, rpc_url, chain_id, timeout), rpc_url
    except _ExitedAtStart as exited:
        if not (persist_state and state_file.exists() and str(state_file) in exited.output):
            raise
    # Most likely a state file cut short by a kill mid-write: keep it aside and start from an empty chain
    # (ensure_deployed then redeploys), rather than leave the stack unable to start.
    kept = state_file.with_name(f"{STATE_FILE}.unreadable-{int(time.time())}")
    state_file.replace(kept)
    with log_path.open("a") as log:
        log.write(f"c2d: anvil could not load its state; moved it to {kept.name} and started empty\n")
    return _launch(command, log_path, rpc_url, chain_id, timeout), rpc_url


class _ExitedAtStart(ChainStackError):
    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def _launch(command: list[str], log_path: Path, rpc_url: str, chain_id: int, timeout: float) -> int:
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _children[process.pid] = process
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _children.pop(process.pid, None)
            with log_path.open("rb") as log:
                log.seek(offset)
                output = log.read(64 * 1024).decode("utf-8", "replace")
            raise _ExitedAtStart(
                f"anvil exited with code {process.returncode} during start; see {log_path}", output
            )
        answered = chain_id_at(rpc_url, timeout=1.0)
        if answered is not None:
            if answered != chain_id:
                stop_anvil(process.pid)
                raise ChainStackError(
                    f"something else answers at {rpc_url} (chain id {answered}, expected {chain_id})"
                )
            return process.pid
        time.sleep(0.05)
    stop_anvil(process.pid)
    raise ChainStackError(f"anvil did not answer within {timeout:.0f} s; see {log_path}")


def _gone(pid: int) -> bool:
    """Whether `pid` has exited; reaps it when it is our child, so no zombie is left behind."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        _children.pop(pid, None)
        return True
    return not alive(pid)


def stop_anvil(pid: int, grace: float = 10.0) -> None:
    """SIGTERM (anvil then writes its state file), SIGKILL after `grace` seconds."""
    if _gone(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait(timeout=grace)


def _has_code(rpc_url: str, address: str) -> bool:
    try:
        answer = httpx.post(
            rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_getCode", "params": [address, "latest"]},
            timeout=5,
        ).json()
    except (httpx.HTTPError, ValueError):
        return False
    code = answer.get("result") if isinstance(answer, dict) else None
    return isinstance(code, str) and len(code) > 2


def ensure_deployed(rpc_url: str, home: Path) -> Path:
    """Deploy the Ocean contracts unless `<home>/addresses.json` names a factory that has code on this chain.

    Deploys with dev account 0 (the public mnemonic); returns the addresses file.
    """
    path = home / ADDRESSES_FILE
    if path.exists():
        try:
            entry = json.loads(path.read_text()).get(NETWORK, {})
        except (ValueError, AttributeError):
            entry = {}
        factory = entry.get("ERC721Factory") if isinstance(entry, dict) else None
        same_chain = isinstance(entry, dict) and entry.get("chainId") == chain_id_at(rpc_url)
        if same_chain and isinstance(factory, str) and _has_code(rpc_url, factory):
            return path
    # web3 is heavy to import; only a first start (or a lost chain state) pays for it.
    from c2d_core.chain import Chain, dev_account
    from c2d_core.deploy import deploy_ocean, write_addresses_file

    chain = Chain.connect(rpc_url)
    addresses = deploy_ocean(chain, dev_account(0))
    write_addresses_file(path, addresses, network=NETWORK)
    return path
