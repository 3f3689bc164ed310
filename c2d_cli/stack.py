"""The embedded local stack on 127.0.0.1: anvil with the Ocean contracts, dagster-webserver,
dagster-daemon, the warm run worker (Dagster's run launcher of the embedded default; none with
`run_launcher="default"`), the Provider and a data origin, with all state under `.c2d/`.

`up` is idempotent (a running stack is reused), writes `.c2d/stack.json` with URLs and PIDs, and
renders the Dagster instance file with one queue limit per compute environment. `down` stops by PID.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from c2d_cli.processes import alive, stop_group
from c2d_cli.stack_paths import STACK_LOGS
from c2d_core import engine
from c2d_core.environments import Environments
from c2d_core.settings import EngineSettings, engine_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 3300
DEFAULT_PROVIDER_PORT = 8030
DEFAULT_RPC_PORT = 8545
# The data origin serving examples/ (the demo's dataset and algorithm), so their DIDs outlive the demo.
DEFAULT_ORIGIN_PORT = 8040
ORIGIN_FOLDER = PROJECT_ROOT / "examples"
# Which of anvil's public test accounts the development Provider uses.
DEV_PROVIDER_ACCOUNT = 9
START_TIMEOUT = 120.0


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    home: str
    dagster_home: str
    webserver_url: str
    webserver_host: str
    webserver_port: int
    webserver_pid: int
    daemon_pid: int
    started_at: float
    # The chain and the Provider (issue 3); absent in a stack.json written before them.
    provider_url: str = ""
    provider_pid: int = 0
    rpc_url: str = ""
    chain_id: int = 8996
    anvil_pid: int = 0
    addresses_file: str = ""
    # The warm run worker (c2d_defs/warm_launcher), 0 when the instance uses Dagster's default launcher.
    worker_pid: int = 0
    # The data origin process (c2d_cli.origin) serving examples/ on loopback; absent in older stack.json.
    origin_url: str = ""
    origin_pid: int = 0
    # The environments file `up` read (C2D_ENVIRONMENTS_FILE then); a restart must serve the same
    # environments even when the shell that restarts it has no such variable. "" in older stack.json.
    environments_file: str = ""

    @property
    def pids(self) -> list[int]:
        order = (
            self.provider_pid,
            self.origin_pid,
            self.daemon_pid,
            self.webserver_pid,
            self.worker_pid,
            self.anvil_pid,
        )
        return [pid for pid in order if pid]


def stack_file(home: Path) -> Path:
    return home / "stack.json"


def read_stack(home: Path) -> Stack | None:
    path = stack_file(home)
    if not path.exists():
        return None
    try:
        return Stack(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Which run launcher `up` writes into the instance file: the template's own (None; the embedded
# dagster.yaml names the warm run worker, deploy/dagster-postgres.yaml none), Dagster's default (a code
# server spawns a process per run) or the warm run worker (c2d_defs/warm_launcher).
RunLauncherChoice = Literal["default", "warm"]
WARM_LAUNCHER = {"module": "c2d_defs.warm_launcher", "class": "WarmRunLauncher"}
# Below $DAGSTER_HOME; the stack passes it to both the launcher (config) and the worker (--socket).
WORKER_SOCKET = Path("warm-worker") / "worker.sock"
# While the warm worker is down (crashed, restarting) a dequeued run goes back into the queue, up to
# this many times, this many seconds apart (Dagster's own retry for an unreachable code server);
# then it fails with Dagster's "failed to reach the user code server".
WORKER_DOWN_RETRIES = 20
WORKER_DOWN_RETRY_DELAY = 15


def render_instance(
    home: Path,
    environments: Environments,
    template: Path | None = None,
    run_launcher: RunLauncherChoice | None = None,
) -> Path:
    """Write $DAGSTER_HOME/dagster.yaml: the instance file (the project's embedded default, or
    `template`, e.g. deploy/dagster-postgres.yaml) plus per-environment queue limits."""
    config = yaml.safe_load((template or PROJECT_ROOT / "dagster.yaml").read_text())
    if run_launcher == "default":
        config.pop("run_launcher", None)
    elif run_launcher == "warm":
        config["run_launcher"] = dict(WARM_LAUNCHER)
    if uses_warm_launcher(config):
        launcher_config = config["run_launcher"].setdefault("config", {}) or {}
        launcher_config.setdefault("socket_path", str(home / WORKER_SOCKET))
        config["run_launcher"]["config"] = launcher_config
        queue = config["run_coordinator"]["config"]
        queue.setdefault("max_user_code_failure_retries", WORKER_DOWN_RETRIES)
        queue.setdefault("user_code_failure_retry_delay", WORKER_DOWN_RETRY_DELAY)
    coordinator = config["run_coordinator"]["config"]
    coordinator["tag_concurrency_limits"] = [
        {"key": "c2d/environment", "value": env.id, "limit": env.max_jobs} for env in environments.all()
    ]
    settings = engine_settings()
    monitoring = config.get("run_monitoring")
    if monitoring is not None:
        if settings.run_monitoring_interval is not None:
            monitoring["poll_interval_seconds"] = settings.run_monitoring_interval
        # A stopping run's worker may publish for up to the publish deadline plus the grace: it must
        # not be marked canceled (and its job salvaged under it) sooner.
        floor = settings.publish_deadline + settings.watchdog_grace
        monitoring["cancel_timeout_seconds"] = max(int(monitoring.get("cancel_timeout_seconds", 0)), floor)
    target = home / "dagster.yaml"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def uses_warm_launcher(config: dict[str, Any]) -> bool:
    launcher = config.get("run_launcher") or {}
    return bool(
        launcher.get("class") == WARM_LAUNCHER["class"] and launcher.get("module") == WARM_LAUNCHER["module"]
    )


def _instance_uses_warm_launcher(home: Path) -> bool:
    return uses_warm_launcher(yaml.safe_load((home / "dagster.yaml").read_text()) or {})


def ensure_provider_key(home: Path) -> Path:
    """The development provider key, derived from anvil's public test mnemonic. Never printed.

    The Provider signs fees and encrypts DDO files with it; the configure pod decrypts with it.
    """
    path = EngineSettings(home=home).resolved_provider_key_file
    if not path.exists():
        from c2d_core.chain import dev_accounts

        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(dev_accounts(DEV_PROVIDER_ACCOUNT + 1)[DEV_PROVIDER_ACCOUNT].key.hex())
    return path


# Where the stack's fetches may go besides public addresses: the demo's and the tests' data origins
# listen on loopback. Private networks and the cloud metadata address (link-local) stay refused, for the
# configure pods (C2D_FETCH_ALLOW) and the Provider's fileinfo and checksum fetches (PROVIDER_FETCH_ALLOW).
LOOPBACK_FETCH_ALLOW = "127.0.0.0/8,::1"


def _stack_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["C2D_HOME"] = str(home)
    env.setdefault("C2D_FETCH_ALLOW", LOOPBACK_FETCH_ALLOW)
    env["DAGSTER_HOME"] = str(home)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


_READY_QUERY = """
{
  instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") { healthy } } }
  workspaceOrError {
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""


def _wait_until_ready(url: str, home: Path, pids: list[int], timeout: float) -> None:
    """Ready means: the daemon's queue coordinator beats, and the code location loaded."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        for pid in pids:
            if not alive(pid):
                raise StackError(f"a stack process (pid {pid}) exited during start; see {home / STACK_LOGS}")
        try:
            data = httpx.post(f"{url}/graphql", json={"query": _READY_QUERY}, timeout=5).json()["data"]
            healthy = data["instance"]["daemonHealth"]["daemonStatus"]["healthy"]
            entries = data["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            failed = [e for e in loaded if e["locationOrLoadError"]["__typename"] == "PythonError"]
            if failed:
                message = failed[0]["locationOrLoadError"].get("message", "")
                raise StackError(f"the code location failed to load: {message.strip()[:500]}")
            if healthy and loaded:
                return
            last_error = "the daemon has no heartbeat yet" if not healthy else "the code location is loading"
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            last_error = str(error) or type(error).__name__
        time.sleep(0.5)
    logs = home / STACK_LOGS
    raise StackError(f"the stack did not become ready in {timeout:.0f} s ({last_error}); see {logs}")


def _create_instance_storage(home: Path, env: dict[str, str]) -> None:
    """Create Dagster's SQLite storage once, before the webserver, daemon and code servers start.

    Started together on a fresh home, they race to create it and can leave the schedule storage with
    two migration heads, after which the code location never loads.
    """
    if (home / "history" / "runs.db").exists() and (home / "schedules" / "schedules.db").exists():
        return
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "instance", "migrate"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StackError(f"could not create Dagster's storage in {home}: {result.stderr.strip()[-500:]}")


def _spawn(command: list[str], env: dict[str, str], log: Path) -> int:
    """Start one stack process in its own session (so `down` can stop its whole group); its pid."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process.pid


def _webserver_command(port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    return [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace]


def _daemon_command() -> list[str]:
    bin_dir = Path(sys.executable).parent
    return [str(bin_dir / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")]


def _check_worker_socket(home: Path) -> None:
    """The worker's socket path must fit a Unix socket address (107 bytes): refuse a home too deep for
    it before anything starts, rather than a worker that exits at once."""
    try:
        engine.check_socket_path(home / WORKER_SOCKET)
    except ValueError as error:
        raise StackError(
            f"{error}: start the stack in a shorter folder (--home), or with `--run-launcher default`"
        ) from error


def _check_same_launcher(home: Path, existing: Stack, run_launcher: RunLauncherChoice | None) -> None:
    """A running stack is reused only with the launcher asked for: switching launchers means new
    Dagster processes, which would end the jobs in flight, so that is left to `down` then `up`."""
    if run_launcher is None:
        return
    running = "warm" if existing.worker_pid else "default"
    if running != run_launcher:
        raise StackError(
            f"the stack in {home} is running with the {running} run launcher, not {run_launcher}: "
            f"stop it first (`c2d dev down`), then `c2d dev up --run-launcher {run_launcher}`"
        )


def _worker_command(home: Path) -> list[str]:
    return [sys.executable, "-m", "c2d_defs.warm_launcher.worker", "--socket", str(home / WORKER_SOCKET)]


def _wait_for_worker(home: Path, pid: int, timeout: float) -> None:
    """Ready means: it has imported the code location and listens on its socket."""
    deadline = time.monotonic() + timeout
    path = str(home / WORKER_SOCKET)
    while time.monotonic() < deadline:
        if not alive(pid):
            raise StackError(
                f"the warm run worker exited during start; see {home / STACK_LOGS / 'worker.log'}"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(path) == 0:
                return
        time.sleep(0.1)
    raise StackError(f"the warm run worker did not listen in {timeout:.0f} s; see {home / STACK_LOGS}")


def _origin_command(port: int) -> list[str]:
    return [sys.executable, "-m", "c2d_cli.origin", "--dir", str(ORIGIN_FOLDER), "--port", str(port)]


def _wait_for_origin(url: str, pid: int, home: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise StackError(f"the data origin exited during start; see {home / STACK_LOGS / 'origin.log'}")
        try:
            if httpx.head(f"{url}/data/weather.csv", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise StackError(f"the data origin did not answer in {timeout:.0f} s; see {home / STACK_LOGS}")


def _provider_command(port: int) -> list[str]:
    # provider_api.server holds the server's bounds (head deadline, connection limit, keep-alive), the
    # same ones the Provider image runs with.
    address = ["--host", "127.0.0.1", "--port", str(port)]
    # One server process per CPU (at most 4): status polls are answered from run storage and each
    # process's cache, and the nonce and claim stores are SQL, safe across processes.
    # PROVIDER_SERVER_WORKERS in the environment pins another count.
    workers = os.environ.get("PROVIDER_SERVER_WORKERS") or "auto"
    return [sys.executable, "-m", "provider_api.server", *address, "--no-access-log", "--workers", workers]


def _recorded_env(stack: Stack) -> dict[str, str]:
    """The settings `up` recorded in stack.json, which every later start of a part repeats."""
    return {"C2D_ENVIRONMENTS_FILE": stack.environments_file} if stack.environments_file else {}


def provider_env(home: Path, stack: Stack) -> dict[str, str]:
    """The environment `up` and `restart` start the stack's Provider with (the stack's own plus the
    Provider's settings); `home` is the resolved stack home."""
    env = _stack_env(home)
    env.update(_engine_chain_env(stack.rpc_url, stack.chain_id, stack.addresses_file, stack.provider_url))
    env.update(_recorded_env(stack))
    key_file = EngineSettings(home=home).resolved_provider_key_file
    return {
        **env,
        "PROVIDER_ENVIRONMENT": "development",
        "PROVIDER_PRIVATE_KEY": key_file.read_text().strip(),
        "PROVIDER_RPC_URL": stack.rpc_url,
        "PROVIDER_CHAIN_ID": str(stack.chain_id),
        "PROVIDER_ADDRESSES_FILE": stack.addresses_file,
        "PROVIDER_GRAPHQL_URL": f"{stack.webserver_url}/graphql",
        "PROVIDER_URL": stack.provider_url,
        # fileinfo is unauthenticated: it may reach the demo's loopback origins, as the configure pods
        # may, and nothing else that is not public. A developer widens it with PROVIDER_FETCH_ALLOW;
        # ALLOW_NON_PUBLIC_IP (everything) is never inherited from the shell.
        "PROVIDER_FETCH_ALLOW": env.get("PROVIDER_FETCH_ALLOW", LOOPBACK_FETCH_ALLOW),
        "PROVIDER_ALLOW_NON_PUBLIC_IP": "false",
    }


def _engine_chain_env(rpc_url: str, chain_id: int, addresses_file: str, provider_url: str) -> dict[str, str]:
    """What the run workers need to publish results as Ocean assets (EngineSettings, issue 8)."""
    return {
        "C2D_CHAIN_RPC_URL": rpc_url,
        "C2D_CHAIN_ID": str(chain_id),
        "C2D_ADDRESSES_FILE": addresses_file,
        "C2D_PROVIDER_URL": provider_url,
    }


def _pick_port(preferred: int) -> int:
    return preferred if _port_free(preferred) else _free_port()


def _wait_for_provider(url: str, pid: int, home: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise StackError(f"the Provider exited during start; see {home / STACK_LOGS / 'provider.log'}")
        try:
            if httpx.get(f"{url}/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    log = home / STACK_LOGS / "provider.log"
    raise StackError(f"the Provider did not answer in {timeout:.0f} s; see {log}")


def _healthy(existing: Stack) -> bool:
    if not all(alive(pid) for pid in existing.pids) or not existing.provider_pid:
        return False
    try:
        httpx.get(f"{existing.webserver_url}/server_info", timeout=5).raise_for_status()
        httpx.get(f"{existing.provider_url}/", timeout=5).raise_for_status()
    except httpx.HTTPError:
        return False
    return True


def up(
    home: Path,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
    instance_template: Path | None = None,
    provider_port: int | None = None,
    run_launcher: RunLauncherChoice | None = None,
) -> tuple[Stack, bool]:
    """Start (or reuse) the stack; returns it and whether it was already running.

    `instance_template` replaces the embedded SQLite instance file, e.g. with deploy/dagster-postgres.yaml
    (its DAGSTER_PG_* variables must then be set in this process's environment). `provider_port`
    (default: 8030, or a free port) pins the Provider's port, e.g. to a random one for a test that
    restarts the Provider and must not find another stack's on the default port. `run_launcher`
    replaces the instance file's launcher ("warm": the warm run worker; "default": Dagster's, no
    worker); None keeps the file's (the embedded dagster.yaml's is the warm worker). `up` starts the
    worker when the instance names it and `down` stops it. A running stack whose only dead part is the
    warm worker gets a new worker, and is reused; one running with the other launcher than
    `run_launcher` asks for is refused (StackError), not restarted under its jobs.
    """
    from c2d_cli import chain_stack

    home = home.resolve()
    existing = read_stack(home)
    if existing and existing.worker_pid and not alive(existing.worker_pid):
        others = Stack(**{**asdict(existing), "worker_pid": 0})
        if _healthy(others):
            _check_same_launcher(home, existing, run_launcher)
            return restart(home, "worker", timeout), True
    if existing and _healthy(existing):
        _check_same_launcher(home, existing, run_launcher)
        return existing, True
    if existing:
        down(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / STACK_LOGS).mkdir(exist_ok=True)
    settings = EngineSettings(home=home)
    render_instance(home, Environments.load(settings.environments_file), instance_template, run_launcher)
    if _instance_uses_warm_launcher(home):
        _check_worker_socket(home)
    ensure_provider_key(home)
    if port is None:
        port = _pick_port(DEFAULT_PORT)
    elif not _port_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is taken; choose another with --port")
    env = _stack_env(home)
    _create_instance_storage(home, env)
    started: list[int] = []
    try:
        anvil_pid, rpc_url = chain_stack.start_anvil(home, _pick_port(DEFAULT_RPC_PORT))
        started.append(anvil_pid)
        addresses_file = chain_stack.ensure_deployed(rpc_url, home)
        origin_port = _pick_port(DEFAULT_ORIGIN_PORT)
        origin = _spawn(_origin_command(origin_port), env, home / STACK_LOGS / "origin.log")
        started.append(origin)
        # Picked before the Dagster processes start: their run workers publish results assets whose
        # serviceEndpoint is this Provider (C2D_PROVIDER_URL).
        provider_port = provider_port or _pick_port(DEFAULT_PROVIDER_PORT)
        provider_url = f"http://127.0.0.1:{provider_port}"
        env.update(_engine_chain_env(rpc_url, 8996, str(addresses_file), provider_url))
        worker = 0
        if _instance_uses_warm_launcher(home):
            # Before the daemon, so the first dequeued run finds it; it needs the same environment
            # as the code servers (the run's process inherits it).
            worker = _spawn(_worker_command(home), env, home / STACK_LOGS / "worker.log")
            started.append(worker)
        webserver = _spawn(_webserver_command(port), env, home / STACK_LOGS / "webserver.log")
        started.append(webserver)
        daemon = _spawn(_daemon_command(), env, home / STACK_LOGS / "daemon.log")
        started.append(daemon)
        url = f"http://127.0.0.1:{port}"
        stack = Stack(
            home=str(home),
            dagster_home=str(home),
            webserver_url=url,
            webserver_host="127.0.0.1",
            webserver_port=port,
            webserver_pid=webserver,
            daemon_pid=daemon,
            started_at=time.time(),
            provider_url=provider_url,
            rpc_url=rpc_url,
            chain_id=8996,
            anvil_pid=anvil_pid,
            addresses_file=str(addresses_file),
            worker_pid=worker,
            origin_url=f"http://127.0.0.1:{origin_port}",
            origin_pid=origin,
            environments_file=str(settings.environments_file.resolve()),
        )
        provider = _spawn(
            _provider_command(provider_port), provider_env(home, stack), home / STACK_LOGS / "provider.log"
        )
        started.append(provider)
        stack.provider_pid = provider
        stack_file(home).write_text(json.dumps(asdict(stack), indent=2))
        if worker:
            _wait_for_worker(home, worker, timeout)
        _wait_until_ready(url, home, [webserver, daemon], timeout)
        _wait_for_provider(provider_url, provider, home, timeout)
        _wait_for_origin(stack.origin_url, origin, home, timeout)
    except BaseException:
        for pid in reversed(started):
            stop_group(pid)
        stack_file(home).unlink(missing_ok=True)
        raise
    return stack, False


RESTARTABLE = ("webserver", "daemon", "provider", "worker", "origin")


def restart(home: Path, component: str, timeout: float = START_TIMEOUT) -> Stack:
    """Start one component of a running stack again, as `up` started it (same ports, home and env).

    For recovery after a crash: the old process must be gone. The new pid is recorded in stack.json,
    so `down` stops it. Returns once the component answers (the webserver: the daemon beats again and
    the code location loaded; the Provider: `GET /`); the daemon is waited for through the webserver.
    """
    home = home.resolve()
    stack = read_stack(home)
    if stack is None:
        raise StackError(f"no stack recorded in {stack_file(home)}")
    if component not in RESTARTABLE:
        raise StackError(f"{component!r} is not one of {', '.join(RESTARTABLE)}")
    old = {
        "webserver": stack.webserver_pid,
        "daemon": stack.daemon_pid,
        "provider": stack.provider_pid,
        "worker": stack.worker_pid,
        "origin": stack.origin_pid,
    }
    if component == "worker" and not _instance_uses_warm_launcher(home):
        raise StackError("this stack's instance uses Dagster's default run launcher: it has no warm worker")
    if alive(old[component]):
        raise StackError(f"the {component} (pid {old[component]}) is still running; stop it first")
    env = _stack_env(home)
    env.update(_engine_chain_env(stack.rpc_url, stack.chain_id, stack.addresses_file, stack.provider_url))
    env.update(_recorded_env(stack))
    log = home / STACK_LOGS / f"{component}.log"
    if component == "webserver":
        stack.webserver_pid = _spawn(_webserver_command(stack.webserver_port), env, log)
    elif component == "daemon":
        stack.daemon_pid = _spawn(_daemon_command(), env, log)
    elif component == "worker":
        stack.worker_pid = _spawn(_worker_command(home), env, log)
    elif component == "origin":
        if not stack.origin_url:
            raise StackError("this stack was started without a data origin; restart it with `c2d dev up`")
        port = int(stack.origin_url.rsplit(":", 1)[1])
        stack.origin_pid = _spawn(_origin_command(port), env, log)
    else:
        port = int(stack.provider_url.rsplit(":", 1)[1])
        stack.provider_pid = _spawn(_provider_command(port), provider_env(home, stack), log)
    stack_file(home).write_text(json.dumps(asdict(stack), indent=2))
    if component == "provider":
        _wait_for_provider(stack.provider_url, stack.provider_pid, home, timeout)
    elif component == "worker":
        _wait_for_worker(home, stack.worker_pid, timeout)
    elif component == "origin":
        _wait_for_origin(stack.origin_url, stack.origin_pid, home, timeout)
    else:
        _wait_until_ready(stack.webserver_url, home, [stack.webserver_pid, stack.daemon_pid], timeout)
    return stack


def down(home: Path) -> bool:
    """Stop the stack recorded in `stack.json`; returns whether anything was running."""
    stack = read_stack(home.resolve())
    if stack is None:
        return False
    was_running = any(alive(pid) for pid in stack.pids)
    for pid in stack.pids:  # the Provider first, the chain last
        stop_group(pid)
    stack_file(home.resolve()).unlink(missing_ok=True)
    return was_running
