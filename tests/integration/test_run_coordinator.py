"""The run coordinator that launches at once, in the webserver as in production: concurrent GraphQL
submits of real compute_job runs (50 on Postgres, the production path; 20 on SQLite, the embedded
default, to bound the suite's time) to a real dagster-webserver and dagster-daemon (the warm run
launcher, so that they take a minute rather than ten; the bubblewrap sandbox), one environment with
maxJobs 2.

Run storage is sampled all along: never more than 2 runs of the environment STARTING or STARTED; the
event log's STARTING-to-end intervals never overlap more than 2 deep either; all reach status 70,
some launched at once by the coordinator, the rest dequeued by the daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster_graphql import DagsterGraphQLClient
from engine_kit import dataset_input, python_algorithm, raw_workflow, serve_origin
from eth_account import Account
from fixtures_postgres import fresh_database

from c2d_cli import stack
from c2d_cli.origin import LocalOrigin
from c2d_cli.processes import stop_group
from c2d_core import engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ENV = "rc-env"
MAX_JOBS = 2
SUBMITS = 50
SQLITE_SUBMITS = 20
DID = "did:op:" + hashlib.sha256(b"run-coordinator").hexdigest()
ENVIRONMENTS = f"""
environments:
  - id: {ENV}
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 60
    maxJobs: {MAX_JOBS}
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {{python: /usr/bin/python3}}
"""
# Slow enough that the queue fills: every submit at once, 2 at a time.
ALGORITHM = "import time; time.sleep(0.3); print('done')"
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "provider-key").write_text(Account.create().key.hex())
    (tmp_path / "environments.yaml").write_text(ENVIRONMENTS)
    yield home


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[LocalOrigin]:
    with serve_origin(tmp_path / "origin", {"a.txt": "1\n2\n"}) as server:
        yield server


def write_instance(home: Path, storage: dict[str, Any] | None) -> None:
    config: dict[str, Any] = {
        "telemetry": {"enabled": False},
        "run_coordinator": {
            "module": "c2d_defs.run_coordinator",
            "class": "ImmediateRunCoordinator",
            "config": {
                "max_concurrent_runs": 8,
                "dequeue_interval_seconds": 1,
                "dequeue_use_threads": True,
                "tag_concurrency_limits": [{"key": engine.ENVIRONMENT, "value": ENV, "limit": MAX_JOBS}],
            },
        },
    }
    config["run_launcher"] = {
        **stack.WARM_LAUNCHER,
        "config": {"socket_path": str(home / stack.WORKER_SOCKET)},
    }
    if storage:
        config["storage"] = storage
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def workflow(home: Path, origin: LocalOrigin, index: int) -> dict[str, Any]:
    return raw_workflow(
        job_id=hashlib.md5(f"rc-{index}-{time.time_ns()}".encode()).hexdigest(),
        environment=ENV,
        inputs=[dataset_input(home, DID, [f"{origin.url}/a.txt"])],
        algorithm=python_algorithm(ALGORITHM),
    )


class Sampler(threading.Thread):
    """Reads run storage in a loop: the most runs of the environment ever seen STARTING or STARTED."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        super().__init__(daemon=True)
        self.instance, self.most, self.samples = instance, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            runs = self.instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS, tags={engine.ENVIRONMENT: ENV}))
            self.most, self.samples = max(self.most, len(runs)), self.samples + 1
            time.sleep(0.01)


def deepest_overlap(instance: dg.DagsterInstance, run_ids: list[str]) -> int:
    """From the event log: the most runs between their STARTING and their end at one moment."""
    edges: list[tuple[float, int]] = []
    for run_id in run_ids:
        events = {
            record.event_log_entry.dagster_event.event_type_value: record.event_log_entry.timestamp
            for record in instance.get_records_for_run(run_id).records
            if record.event_log_entry.dagster_event is not None
        }
        ended = min(events[kind] for kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE") if kind in events)
        edges += [(events["PIPELINE_STARTING"], 1), (ended, -1)]
    depth = most = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        depth += step
        most = max(most, depth)
    return most


@contextlib.contextmanager
def run_stack(home: Path) -> Iterator[int]:
    env = stack._stack_env(home)
    env.update(
        C2D_ENVIRONMENTS_FILE=str(home.parent / "environments.yaml"),
        C2D_FETCH_RETRIES="0",
        C2D_FETCH_ALLOW="127.0.0.1/32",
        C2D_CONFIGURE_DEADLINE="60",
    )
    (home / "stack-logs").mkdir(exist_ok=True)
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dagster"), "instance", "migrate"], env=env, cwd=ROOT, check=True
    )
    port = stack._free_port()
    worker = stack._spawn(stack._worker_command(home), env, home / "stack-logs" / "worker.log")
    pids = [
        worker,
        stack._spawn(stack._webserver_command(port), env, home / "stack-logs" / "webserver.log"),
        stack._spawn(stack._daemon_command(), env, home / "stack-logs" / "daemon.log"),
    ]
    try:
        stack._wait_for_worker(home, worker, timeout=180)
        stack._wait_until_ready(f"http://127.0.0.1:{port}", home, pids, timeout=180)
        yield port
    finally:
        for pid in pids:
            stop_group(pid)


def concurrent_submits(
    home: Path, origin: LocalOrigin, monkeypatch: pytest.MonkeyPatch, submits: int
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("C2D_HOME", str(home))
    with run_stack(home) as port:
        jobs = [workflow(home, origin, index) for index in range(submits)]
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_coordinator).__name__ == "ImmediateRunCoordinator"
            sampler = Sampler(instance)
            sampler.start()
            try:
                gate = threading.Barrier(submits)

                def submit(job: dict[str, Any]) -> str:
                    # One client each: a client's transport is not shared between threads.
                    client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=300)
                    gate.wait()
                    return client.submit_job_execution(
                        engine.JOB_NAME,
                        repository_location_name=engine.LOCATION,
                        repository_name=engine.REPOSITORY,
                        run_config=engine.run_config(job),
                        tags={engine.JOB_ID: job["jobId"], engine.ENVIRONMENT: ENV},
                    )

                with ThreadPoolExecutor(submits) as pool:
                    run_ids = list(pool.map(submit, jobs))
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    runs = instance.get_runs(dg.RunsFilter(run_ids=run_ids))
                    if all(run.status in FINISHED_STATUSES for run in runs):
                        break
                    time.sleep(0.5)
            finally:
                sampler.halt.set()
                sampler.join()
            runs = instance.get_runs(dg.RunsFilter(run_ids=run_ids))
            assert len(runs) == submits and len(set(run_ids)) == submits
            failed = [run.run_id for run in runs if run.status != dg.DagsterRunStatus.SUCCESS]
            assert not failed, [
                (r.status, r.tags.get(engine.STATUS_DETAIL)) for r in runs if r.run_id in failed
            ]
            assert all(run.tags[engine.STATUS] == "70" for run in runs)
            assert sampler.samples > 100
            assert sampler.most == MAX_JOBS
            assert deepest_overlap(instance, run_ids) <= MAX_JOBS
            at_once = [
                run_id
                for run_id in run_ids
                if any(
                    "Launched at once by the run coordinator" in (entry.message or "")
                    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                )
            ]
            queued = [
                run_id
                for run_id in run_ids
                if instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
            ]
            # Both paths ran: the first runs at once, the rest through the daemon; none took both.
            assert at_once and queued and not set(at_once) & set(queued)
            assert len(at_once) + len(queued) == submits
            print(f"\n{len(at_once)} launched at once, {len(queued)} queued, {sampler.samples} samples")


def test_twenty_concurrent_submits_on_sqlite_never_exceed_max_jobs(
    home: Path, origin: LocalOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_instance(home, None)
    concurrent_submits(home, origin, monkeypatch, SQLITE_SUBMITS)


def test_fifty_concurrent_submits_on_postgres_never_exceed_max_jobs(
    home: Path, origin: LocalOrigin, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh_database("c2d_rc") as name:
        write_instance(
            home, {"postgres": {"postgres_url": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"}}
        )
        concurrent_submits(home, origin, monkeypatch, SUBMITS)
