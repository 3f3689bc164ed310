"""kill -9 of the Provider, the Dagster webserver or the Dagster daemon in each phase of a job
(queued, configure, algorithm, publish): the job loses nothing. It runs to its end while the
component is down (a queued job waits for the daemon), and once the component is started again
(`stack.restart`, as `stack.up` started it) the Provider serves the job's final status and results.

Why: runs do not depend on the webserver or the Provider once launched. The run coordinator
launches a run with room at submit (in the webserver, c2d_defs/run_coordinator.py) and the daemon
dequeues the rest; the run worker is a process of its own that writes events and tags to run
storage. The webserver is the Provider's GraphQL door, and the Provider keeps no job state (a job is
a Dagster run found by its tags). Locally the run workers are forked by the warm run worker, a stack
process of its own (the embedded default's launcher), or, with Dagster's default launcher, spawned by
the code server of whichever process launched them; so "the webserver dies" and "the daemon dies"
here are that process and its code server SIGKILLed, the run workers left alone, as they are
separate pods under the K8sRunLauncher. The warm worker's own death is test_warm_worker_kill.py.

Each phase is pinned without timing guesses: the environment is full of jobs held at configure
(queued), the data origin or the S3 API holds its connection (configure, publish), or the algorithm
sleeps (algorithm).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    TcpGate,
    children,
    command_line,
    dagster_instance,
    demo_job,
    finished_in_storage,
    finished_job,
    job_json,
    kill9,
    process_group,
    reaped_group,
    run_of,
    s3_gated_stack,
    wait_for,
)

from c2d_cli import stack
from c2d_cli.processes import alive
from c2d_core import engine
from c2d_core.environments import Environments
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.dagster_jobs import DagsterJobs

# About 10 s a case on an idle 2-core machine; the bounds leave room for a loaded one.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

ALGORITHM = "import time; time.sleep(3); open('/data/outputs/out.txt', 'w').write('still here')"
PHASES = ("queued", "configure", "algorithm", "publish")
# The daemon only dequeues and launches: once a run is launched, its stages run in the run worker,
# so for the daemon the algorithm phase stands for configure and publish too.
CASES = [(component, phase) for component in ("webserver", "provider") for phase in PHASES] + [
    ("daemon", "queued"),
    ("daemon", "algorithm"),
]


@dataclass
class GatedStack:
    home: Path
    origin: TcpGate  # in front of the data origin: holds the configure pod
    s3: TcpGate  # in front of the S3 API: holds the publish pod
    key_file: Path


@pytest.fixture(scope="module")
def gated_stack(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[GatedStack]:
    home = tmp_path_factory.mktemp("component_kills") / ".c2d"
    with s3_gated_stack(home, moto_endpoint, "c2d-component-kills") as (_, origin_gate, s3_gate):
        yield GatedStack(home, origin_gate, s3_gate, EngineSettings(home=home).resolved_provider_key_file)


def _kill(component: str, running: stack.Stack) -> None:
    if component in ("daemon", "webserver"):
        # The process and its code server; the run workers stay (pods): the warm worker's children,
        # or those this code server spawned under Dagster's default launcher.
        pid = running.daemon_pid if component == "daemon" else running.webserver_pid
        code_servers = [child for child in children(pid) if "dagster api grpc" in command_line(child)]
        assert code_servers, f"the {component} has no code server"
        kill9(pid)
        for code_server in code_servers:
            kill9(code_server)
    else:
        kill9(running.provider_pid, group=True)


def _run_workers(running: stack.Stack) -> list[int]:
    """The run worker processes, whichever of the webserver's and the daemon's code servers spawned them,
    or the warm run worker forked (its children, each in a process group of its own)."""
    spawned = [
        pid
        for group in (running.webserver_pid, running.daemon_pid)
        for pid in process_group(group)
        if "multiprocessing" in command_line(pid)
    ]
    forked = children(running.worker_pid) if running.worker_pid else []
    return spawned + forked


def _fill_environment(gs: GatedStack, operator: DagsterJobs, instance: Any) -> list[Workflow]:
    """Submit as many jobs as the environment's maxJobs and hold them at configure (the origin holds
    their input), so that the next job of the environment waits in the queue."""
    settings = EngineSettings(home=gs.home)
    first = demo_job(gs.origin.url, gs.key_file, "print('holder')")
    room = Environments.load(settings.environments_file).get(first.environment).max_jobs
    gs.origin.set_mode("hold")
    holders = [first, *(demo_job(gs.origin.url, gs.key_file, "print('holder')") for _ in range(room - 1))]
    for holder in holders:
        operator.submit(holder)
    for holder in holders:
        wait_for(
            lambda holder=holder: (
                (run := run_of(instance, holder.job_id)) is not None and run.tags.get(engine.STATUS) == "20"
            ),
            60,
            f"holder {holder.job_id} at configure",
        )
    return holders


def _reach(phase: str, gs: GatedStack, running: stack.Stack, instance: Any, job_id: str) -> None:
    """Wait until the job is in `phase` (its pin is set before the submission)."""
    if phase == "queued":
        run = wait_for(lambda: run_of(instance, job_id), 10, "the run")
        assert run.status.value == "QUEUED"
    elif phase == "configure":
        wait_for(lambda: gs.origin.held, 30, "the configure pod to ask the origin for the input")
        assert run_of(instance, job_id).tags[engine.STATUS] == "20"
    elif phase == "algorithm":
        wait_for(lambda: run_of(instance, job_id).tags.get(engine.STATUS) == "40", 30, "status 40")
    else:
        wait_for(lambda: gs.s3.held, 30, "the publish pod to reach the result store")
        assert run_of(instance, job_id).tags[engine.STATUS] == "60"


@pytest.mark.parametrize(("component", "phase"), CASES)
def test_component_killed_in_each_phase_the_job_finishes_and_is_served_after_restart(
    gated_stack: GatedStack, component: str, phase: str
) -> None:
    gs = gated_stack
    running = stack.read_stack(gs.home)
    assert running is not None
    workflow = demo_job(gs.origin.url, gs.key_file, ALGORITHM)
    old_daemon = running.daemon_pid
    with (
        reaped_group(old_daemon) if component == "daemon" else _nothing(),
        dagster_instance(gs.home) as instance,
        DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=gs.home) as operator,
    ):
        holders: list[Workflow] = []
        if phase == "queued":
            holders = _fill_environment(gs, operator, instance)
            if component == "daemon":
                _kill("daemon", running)  # dead before the job arrives: nothing will dequeue it
        elif phase == "configure":
            gs.origin.set_mode("hold")
        elif phase == "publish":
            gs.s3.set_mode("hold")
        try:
            operator.submit(workflow)
            _reach(phase, gs, running, instance, workflow.job_id)
            if not (phase == "queued" and component == "daemon"):
                _kill(component, running)
            if component == "webserver":
                # The Provider reads jobs from run storage, not through the webserver (issue 14): a
                # consumer's status poll is still answered while it is down. Only submits and stops
                # go to Dagster over GraphQL (tests/integration/test_dagster_jobs.py: 503 for those).
                job = job_json(running.provider_url, workflow)
                assert job is not None and job["jobId"] == workflow.job_id, job
                assert job["dateFinished"] is None, job
            elif component == "daemon":
                assert job_json(running.provider_url, workflow) is not None
            else:
                assert job_json(running.provider_url, workflow) is None  # nobody answers
            if component == "daemon" and phase == "algorithm":
                # The run worker is a process of its own: it outlives the daemon and its code server.
                workers = _run_workers(running)
                assert workers and all(alive(pid) for pid in workers)
        finally:
            gs.origin.set_mode("open")
            gs.s3.set_mode("open")
        for holder in holders:  # they end once the origin answers; the next case starts with room
            assert finished_in_storage(instance, holder.job_id, 60).tags[engine.STATUS] == "70"

        if phase == "queued" and component == "daemon":
            time.sleep(3)  # three dequeue intervals: with a daemon it would have started by now
            assert run_of(instance, workflow.job_id).status.value == "QUEUED"
            job = job_json(running.provider_url, workflow)
            assert job is not None and job["status"] == 1 and job["runStatus"] == "QUEUED", job
        else:
            # With the component still down, the job runs to its end in run storage.
            run = finished_in_storage(instance, workflow.job_id, 60)
            assert run.status.value == "SUCCESS" and run.tags[engine.STATUS] == "70", run.tags

        stack.restart(gs.home, component)
        job = finished_job(running.provider_url, workflow, 60)
        assert job["status"] == 70 and job["runStatus"] == "SUCCESS" and job["stopreq"] == 0, job
        assert "out.txt" in [entry["filename"] for entry in job["results"]]


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
