"""The warm run launcher with a real worker process: real runs of compute_job (sandbox, pod programs, a
loopback origin) on a real SQLite instance and on Postgres, a stop, a killed run process, a killed
worker, a worker that is down and a fork the kernel refuses.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.errors import DagsterLaunchFailedError, DagsterUserCodeUnreachableError
from dagster._core.launcher import LaunchRunContext, WorkerStatus
from engine_kit import dataset_input, make_c2d_home, python_algorithm, raw_workflow, serve_origin
from fixtures_postgres import fresh_database

from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_defs.definitions import defs
from c2d_defs.warm_launcher import WORKER_PID_TAG, WarmRunLauncher, protocol

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DID = "did:op:" + hashlib.sha256(b"warm-dataset").hexdigest()
ENVIRONMENTS = """
environments:
  - id: test-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 60
    maxJobs: 2
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""
QUICK = "print('warm hello')"
SLEEPER = "import time; print('algorithm started', flush=True); time.sleep(60)"
LAUNCHER = {"module": "c2d_defs.warm_launcher", "class": "WarmRunLauncher"}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Worker:
    """The real worker process (python -m c2d_defs.warm_launcher.worker) for one home."""

    def __init__(self, home: Path, env: dict[str, str], code: str | None = None) -> None:
        self.home, self.env, self.code = home, env, code
        self.process: subprocess.Popen[bytes] | None = None
        self.socket = protocol.default_socket_path(home)

    def start(self) -> Worker:
        command = (
            [sys.executable, "-c", self.code]
            if self.code
            else [sys.executable, "-m", "c2d_defs.warm_launcher.worker"]
        )
        log = (self.home / "worker.log").open("ab")
        self.process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.answers, 60, "the warm worker to listen")
        return self

    def answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the worker exited: {(self.home / 'worker.log').read_text()[-3000:]}")
        try:
            return bool(protocol.request(self.socket, {"cmd": "ping"}, timeout=2).get("ok"))
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Short: the worker's socket path must fit a Unix socket address.
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"c2dw-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS, home=home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home
    subprocess.run(["rm", "-rf", str(home)], check=False)


def write_instance(home: Path, storage: dict[str, Any] | None = None) -> None:
    config: dict[str, Any] = {"telemetry": {"enabled": False}, "run_launcher": LAUNCHER}
    if storage:
        config["storage"] = storage
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[LocalOrigin]:
    with serve_origin(tmp_path / "origin", {"a.txt": "1\n2\n3\n"}) as server:
        yield server


def workflow(home: Path, origin: LocalOrigin, algorithm: str) -> dict[str, Any]:
    return raw_workflow(
        job_id=hashlib.md5(f"{algorithm}{time.time_ns()}".encode()).hexdigest(),
        environment="test-env",
        inputs=[dataset_input(home, DID, [f"{origin.url}/a.txt"])],
        algorithm=python_algorithm(algorithm),
    )


def launch(instance: dg.DagsterInstance, job: dict[str, Any]) -> dg.DagsterRun:
    """Create a compute_job run whose origin is the code location (as the webserver's would be) and
    launch it through the instance's launcher."""
    repository = ReconstructableRepository.for_module(
        "c2d_defs.definitions", "defs", working_directory=str(ROOT)
    )
    origin = repository.get_reconstructable_job("compute_job").get_python_origin()
    run = instance.create_run_for_job(
        job_def=defs.get_job_def("compute_job"),
        run_config=engine.run_config(job),
        tags={engine.JOB_ID: job["jobId"]},
        job_code_origin=origin,
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run


def ended(instance: dg.DagsterInstance, run_id: str, timeout: float = 120) -> dg.DagsterRun:
    return wait_for(
        lambda: (run := instance.get_run_by_id(run_id)) is not None and run.is_finished and run,
        timeout,
        "the run to end",
    )


def messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.message or "" for entry in instance.all_logs(run_id))


def phase_started(instance: dg.DagsterInstance, run_id: str, phase: str) -> Callable[[], bool]:
    def check() -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and engine.phase_tag(phase, "started") in run.tags

    return check


def network_sockets(pid: int) -> set[str]:
    """The worker's open TCP sockets and database files, from /proc (there must be none)."""
    inodes, files = set(), set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
        elif target.endswith((".db", ".db-wal", ".sqlite")):
            files.add(target)
    tcp = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            tcp.add(line.split()[9])
    return files | {f"tcp socket {inode}" for inode in inodes & tcp}


def run_to_70(home: Path, origin: LocalOrigin) -> None:
    worker = Worker(home, dict(os.environ)).start()
    try:
        assert worker.process is not None
        with dg.DagsterInstance.get() as instance:
            assert isinstance(instance.run_launcher, WarmRunLauncher)
            job = workflow(home, origin, QUICK)
            run = launch(instance, job)
            done = ended(instance, run.run_id)
            assert done.status == dg.DagsterRunStatus.SUCCESS, messages(instance, run.run_id)[-3000:]
            assert done.tags[engine.STATUS] == "70"
            child = int(done.tags[WORKER_PID_TAG])
            assert child != worker.process.pid
            assert f"Started process for run (pid: {child})" in messages(instance, run.run_id)
            # The run is over in storage a moment before its process has shut its threads and exited.
            wait_for(
                lambda: instance.run_launcher.check_run_worker_health(done).status == WorkerStatus.SUCCESS,
                30,
                "the health check to say the run's process finished",
            )
            # The worker forked with nothing open to storage, and still holds nothing after a run.
            assert network_sockets(worker.process.pid) == set()
    finally:
        worker.stop()


def test_compute_job_runs_to_70_in_a_forked_child_on_sqlite(home: Path, origin: LocalOrigin) -> None:
    write_instance(home)
    run_to_70(home, origin)


def test_compute_job_runs_to_70_in_a_forked_child_on_postgres(home: Path, origin: LocalOrigin) -> None:
    with fresh_database("c2d_warm") as name:
        postgres = {"postgres": {"postgres_url": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"}}
        write_instance(home, postgres)
        run_to_70(home, origin)


def test_terminate_interrupts_the_run_and_its_stage_publishes(home: Path, origin: LocalOrigin) -> None:
    write_instance(home)
    worker = Worker(home, dict(os.environ)).start()
    try:
        with dg.DagsterInstance.get() as instance:
            run = launch(instance, workflow(home, origin, SLEEPER))
            wait_for(phase_started(instance, run.run_id, "algorithm"), 60, "the algorithm to start")
            assert instance.run_launcher.terminate(run.run_id)
            done = ended(instance, run.run_id)
            assert done.status == dg.DagsterRunStatus.CANCELED
            # The algorithm op's interrupt handler ran: a stop, published, with the logs.
            assert done.tags[engine.STOP_REQUESTED] == "1"
            assert engine.DATE_FINISHED in done.tags
            assert "algorithmLog" in done.tags[engine.RESULTS]
    finally:
        worker.stop()


def test_a_run_process_killed_fails_its_run_in_dagsters_words(home: Path, origin: LocalOrigin) -> None:
    write_instance(home)
    worker = Worker(home, dict(os.environ)).start()
    try:
        with dg.DagsterInstance.get() as instance:
            run = launch(instance, workflow(home, origin, SLEEPER))
            wait_for(phase_started(instance, run.run_id, "algorithm"), 60, "the algorithm to start")
            child = int(instance.get_run_by_id(run.run_id).tags[WORKER_PID_TAG])  # type: ignore[union-attr]
            os.kill(child, signal.SIGKILL)
            done = ended(instance, run.run_id)
            assert done.status == dg.DagsterRunStatus.FAILURE
            # The stage watchdog's mark of a dead worker (c2d_defs/stage_watchdog.py).
            text = messages(instance, run.run_id)
            assert f"Run execution process for {run.run_id}" in text
            assert "was killed by signal 9 (SIGKILL) before the run finished" in text
            assert instance.run_launcher.check_run_worker_health(done).status == WorkerStatus.FAILED
    finally:
        worker.stop()


def test_a_killed_worker_takes_its_runs_and_the_next_worker_fails_them(
    home: Path, origin: LocalOrigin
) -> None:
    write_instance(home)
    worker = Worker(home, dict(os.environ)).start()
    assert worker.process is not None
    try:
        with dg.DagsterInstance.get() as instance:
            run = launch(instance, workflow(home, origin, SLEEPER))
            wait_for(phase_started(instance, run.run_id, "algorithm"), 60, "the algorithm to start")
            child = int(instance.get_run_by_id(run.run_id).tags[WORKER_PID_TAG])  # type: ignore[union-attr]
            worker.process.kill()
            worker.process.wait()
            wait_for(
                lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 10, "the run process to die"
            )
            # While no worker runs, the health check says so (run monitoring then fails the run) and
            # a launch is "unreachable" (the queue puts the run back).
            started = instance.get_run_by_id(run.run_id)
            assert started is not None and started.status == dg.DagsterRunStatus.STARTED
            launcher = WarmRunLauncher(connect_wait_seconds=0.2)
            launcher.register_instance(instance)
            assert launcher.check_run_worker_health(started).status == WorkerStatus.UNKNOWN
            with pytest.raises(DagsterUserCodeUnreachableError, match="warm run worker is not running"):
                launcher.launch_run(LaunchRunContext(dagster_run=started, workspace=None))
            # A worker started again fails the run its predecessor left, at once.
            worker.start()
            done = ended(instance, run.run_id, timeout=30)
            assert done.status == dg.DagsterRunStatus.FAILURE
            assert "died with its warm run worker before the run finished" in messages(instance, run.run_id)
    finally:
        worker.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# A fake only for what cannot be had here on demand: the kernel refusing a fork (EAGAIN). The worker
# process, its socket and the launcher are real.
REFUSING_WORKER = f"""
import errno, os, sys
from pathlib import Path
from c2d_defs.warm_launcher import protocol, worker

def refuse():
    raise OSError({errno.EAGAIN}, "Resource temporarily unavailable")

home = os.environ["DAGSTER_HOME"]
runs = protocol.state_dir(home) / "runs.json"
worker.Worker(protocol.default_socket_path(home), runs, [], fork=refuse).serve()
"""


def test_a_fork_the_kernel_refuses_is_a_clear_launch_failure(home: Path, origin: LocalOrigin) -> None:
    write_instance(home)
    protocol.state_dir(home).mkdir(parents=True)
    worker = Worker(home, dict(os.environ), code=REFUSING_WORKER).start()
    try:
        with dg.DagsterInstance.get() as instance:
            with pytest.raises(DagsterLaunchFailedError) as raised:
                launch(instance, workflow(home, origin, QUICK))
            assert "could not start run" in str(raised.value)
            assert "fork failed: Resource temporarily unavailable (errno 11)" in str(raised.value)
    finally:
        worker.stop()


def test_reload_reexecutes_in_place_and_keeps_its_runs(home: Path, origin: LocalOrigin) -> None:
    write_instance(home)
    worker = Worker(home, dict(os.environ)).start()
    assert worker.process is not None
    try:
        with dg.DagsterInstance.get() as instance:
            run = launch(instance, workflow(home, origin, SLEEPER))
            wait_for(phase_started(instance, run.run_id, "algorithm"), 60, "the algorithm to start")
            before = (home / "worker.log").read_text().count("ready on")
            assert protocol.request(worker.socket, {"cmd": "reload"})["ok"]
            wait_for(lambda: (home / "worker.log").read_text().count("ready on") > before, 60, "the re-exec")
            answer = protocol.request(worker.socket, {"cmd": "ping"})
            # The same process (so its children stay its own), holding the run it had.
            assert answer["pid"] == worker.process.pid and answer["runs"] == [run.run_id]
            # The new image reaps the adopted child and stops it like any other.
            assert instance.run_launcher.terminate(run.run_id)
            done = ended(instance, run.run_id)
            assert done.status == dg.DagsterRunStatus.CANCELED and done.tags[engine.STOP_REQUESTED] == "1"
            wait_for(lambda: protocol.request(worker.socket, {"cmd": "ping"})["runs"] == [], 10, "the reap")
    finally:
        worker.stop()
