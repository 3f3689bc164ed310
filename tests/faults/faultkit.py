"""Tools of the fault tests: a TCP gate that holds or refuses connections to a real server, jobs
submitted straight to Dagster, the Provider's job JSON, and the stack's processes.

The gate sits between a pod and a real server (the data origin, the S3 API): holding a connection
pins a job in a phase (the configure pod waits for its input, the publish pod for the store) without
any timing guess, and refusing connections is the store going down as its clients see it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from c2d_cli.demo import demo_workflow
from c2d_cli.processes import alive
from c2d_core import engine
from c2d_core.workflow import Workflow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = TypeVar("T")
Mode = Literal["open", "hold", "refuse"]


class TcpGate:
    """A loopback TCP proxy to `target` with three modes, switchable at any time:

    - open: connections are forwarded (held ones too, once the gate opens);
    - hold: new connections are accepted and wait, unanswered, until the mode changes;
    - refuse: new connections are reset at once (counted in `refused`), like a server that is down;
      `set_mode("refuse", count=n)` refuses the next n connections only, then opens.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._mode: Mode = "open"
        self._refuse_until: int | None = None  # open once `refused` reaches this
        self._changed = threading.Condition()
        self.held = 0  # connections waiting right now
        self.refused = 0
        self.forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: Mode, count: int | None = None) -> None:
        with self._changed:
            self._mode = mode
            self._refuse_until = self.refused + count if mode == "refuse" and count is not None else None
            self._changed.notify_all()

    def __enter__(self) -> TcpGate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.set_mode("refuse")
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._changed:
            if self._mode == "hold":
                self.held += 1
                self._changed.wait_for(lambda: self._mode != "hold")
                self.held -= 1
            mode = self._mode
            if mode == "refuse":
                self.refused += 1
                if self._refuse_until is not None and self.refused >= self._refuse_until:
                    self._mode, self._refuse_until = "open", None
        if mode == "refuse":
            # SO_LINGER 0: close sends a reset, as a port with nobody behind it would.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.forwarded += 1
        _pipe(client, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    try:
        while True:
            readable, _, _ = select.select(list(peers), [], [], 60)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last seen: {last!r})")


# A Provider server process builds Dagster's storage at its first status read, which takes seconds on
# a loaded machine (a just-restarted Provider's second process is still cold): a slow answer is still
# an answer. A Provider that is down refuses the connection at once, whatever this is.
JOB_JSON_TIMEOUT = 30.0


def job_json(provider_url: str, workflow: Workflow) -> dict[str, Any] | None:
    """The Provider's job JSON, or None while the Provider (or Dagster behind it) cannot answer."""
    try:
        response = httpx.get(
            f"{provider_url}/api/services/compute",
            params={"consumerAddress": workflow.owner, "jobId": workflow.job_id},
            timeout=JOB_JSON_TIMEOUT,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    jobs = response.json()
    return jobs[0] if jobs else None


def finished_job(provider_url: str, workflow: Workflow, timeout: float) -> dict[str, Any]:
    """Wait until the job's final status and its run's end are both recorded; the job JSON."""

    def finished() -> dict[str, Any] | None:
        job = job_json(provider_url, workflow)
        ended = (
            job is not None and job["dateFinished"] and job["runStatus"] in ("SUCCESS", "FAILURE", "CANCELED")
        )
        return job if ended else None

    return wait_for(finished, timeout, f"job {workflow.job_id} to finish", interval=0.3)


def demo_job(origin_url: str, key_file: Path, algorithm: str) -> Workflow:
    """The demo workflow (input fetched from `origin_url`) with its own ids and a raw algorithm."""
    raw = demo_workflow(origin_url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)
    raw = {**raw, "jobId": uuid.uuid4().hex, "agreementId": "0x" + uuid.uuid4().hex * 2}
    raw["algorithm"] = {**raw["algorithm"], "rawcode": algorithm}
    return Workflow.model_validate(raw)


def kill9(pid: int, group: bool = False) -> None:
    """SIGKILL `pid` (or its whole process group) and wait until it is gone."""
    if group:
        os.killpg(pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, f"pid {pid} to die", interval=0.05)


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def process_group(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def command_line(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def reaped_group(pgid: int) -> Iterator[None]:
    """On exit, SIGKILL whatever is left of process group `pgid` (processes a test orphaned)."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def dagster_instance(home: Path) -> Iterator[Any]:
    """The stack's Dagster instance, read from this process (run storage, no webserver involved)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def run_of(instance: Any, job_id: str) -> Any:
    """The Dagster run of a job, straight from run storage (None before it exists)."""
    import dagster as dg

    runs = instance.get_runs(filters=dg.RunsFilter(tags={engine.JOB_ID: job_id}), limit=1)
    return runs[0] if runs else None


def finished_in_storage(instance: Any, job_id: str, timeout: float) -> Any:
    """Wait until the job's run has ended in run storage (whatever serves or does not serve HTTP)."""

    def ended() -> Any:
        run = run_of(instance, job_id)
        return run if run is not None and run.is_finished and engine.DATE_FINISHED in run.tags else None

    return wait_for(ended, timeout, f"the run of job {job_id} to end in run storage", interval=0.3)


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP `pid` for the block: it keeps its sockets (connections are accepted by the kernel)
    but answers nothing, like a hung server; SIGCONT on exit, whatever happened."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def s3_credentials_file(path: Path, access_key: str, secret_key: str) -> Path:
    """An AWS shared credentials file (what the publish pod gets as its `s3-credentials` secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n")
    return path


@contextlib.contextmanager
def s3_gated_stack(
    home: Path, moto_endpoint: str, bucket: str, **extra_env: str
) -> Iterator[tuple[Any, TcpGate, TcpGate]]:
    """The embedded stack with results in S3 (moto) reached through a gate, and the data origin
    (examples/) behind another gate; yields (stack, origin gate, S3 gate). `extra_env` (C2D_*) is
    set for the stack's processes."""
    import pytest
    from fixtures_s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server

    from c2d_cli import stack
    from c2d_cli.origin import LocalOrigin

    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            **extra_env,
        }.items():
            patch.setenv(key, value)
        S3Server(moto_endpoint, bucket).client().create_bucket(Bucket=bucket)
        s3_port = int(moto_endpoint.rsplit(":", 1)[1])
        with (
            LocalOrigin(EXAMPLES) as origin,
            TcpGate("127.0.0.1", int(origin.url.rsplit(":", 1)[1])) as origin_gate,
            TcpGate("127.0.0.1", s3_port) as s3_gate,
        ):
            for key, value in S3Server(s3_gate.url, bucket).env().items():
                patch.setenv(key, value)
            s3_credentials_file(home / "secrets" / "s3-credentials", ACCESS_KEY, SECRET_KEY)
            running, _ = stack.up(home, port=stack._free_port(), provider_port=stack._free_port())
            try:
                yield running, origin_gate, s3_gate
            finally:
                origin_gate.set_mode("open")
                s3_gate.set_mode("open")
                stack.down(home)


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a scratch folder, loopback, trust), so it can
    be restarted without touching the machine's server that other tests and services share."""

    bin_dir: Path
    data_dir: Path
    port: int

    def _ctl(self, *args: str) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off"
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "30"]
        command += [*args, "-o", options, "-l", str(self.data_dir / "server.log")]
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session (their transactions roll back) and shuts down cleanly."""
        self._ctl("stop", "-m", mode)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()


def _as_postgres(command: list[str]) -> list[str]:
    """The server refuses to run as root: run its tools as the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def postgres_bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    import shutil
    import tempfile

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are not installed")
    # Not under pytest's tmp dirs: those are root-only, and the server runs as `postgres`.
    scratch = Path(tempfile.mkdtemp(prefix="c2d-pg-"))
    data_dir = scratch / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(scratch, "postgres", "postgres")
        shutil.chown(data_dir, "postgres", "postgres")
    initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=60)
    server = PrivatePostgres(bin_dir, data_dir, _free_port())
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop("immediate")
        shutil.rmtree(scratch, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
