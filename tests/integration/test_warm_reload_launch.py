"""The warm run worker re-executing itself (a `reload`, as a change to c2d_defs or c2d_core makes it)
while runs are in flight and while runs are being launched: every run succeeds. A launch or a health
check that reaches the worker while its new image imports Dagster waits for it, rather than being
refused (the run failed at once, or failed by run monitoring's health check).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import WorkerStatus
from test_warm_launcher import (
    LAUNCHER,
    ROOT,
    Worker,
    ended,
    launch,
    messages,
    phase_started,
    wait_for,
    workflow,
)
from test_warm_launcher import home as home
from test_warm_launcher import origin as origin

from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_defs.definitions import defs
from c2d_defs.warm_launcher import WarmRunLauncher, protocol

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# Long enough to be in flight across a re-exec, short enough to keep the test quick.
SLOW = "import time; print('algorithm started', flush=True); time.sleep(8); print('done')"
# What run monitoring leaves alone (dagster._daemon.monitoring.run_monitoring.monitor_started_run).
HEALTHY = (WorkerStatus.RUNNING, WorkerStatus.SUCCESS)
IN_FLIGHT = 2
DURING = 3
IMPATIENT = {
    "telemetry": {"enabled": False},
    "run_launcher": {**LAUNCHER, "config": {"connect_wait_seconds": 0.0}},
}


def create(instance: dg.DagsterInstance, job: dict[str, Any]) -> dg.DagsterRun:
    """A compute_job run as test_warm_launcher.launch makes it, not launched yet."""
    repository = ReconstructableRepository.for_module(
        "c2d_defs.definitions", "defs", working_directory=str(ROOT)
    )
    return instance.create_run_for_job(
        job_def=defs.get_job_def("compute_job"),
        run_config=engine.run_config(job),
        tags={engine.JOB_ID: job["jobId"]},
        job_code_origin=repository.get_reconstructable_job("compute_job").get_python_origin(),
    )


def ready_count(home: Path) -> int:
    return (home / "worker.log").read_text().count(" ready on ")


def test_runs_in_flight_and_runs_launched_during_a_reload_all_succeed(
    home: Path, origin: LocalOrigin
) -> None:
    (home / "dagster.yaml").write_text(yaml.safe_dump(IMPATIENT))
    worker = Worker(home, dict(os.environ)).start()
    assert worker.process is not None
    try:
        with dg.DagsterInstance.get() as instance:
            in_flight = [launch(instance, workflow(home, origin, SLOW)) for _ in range(IN_FLIGHT)]
            for run in in_flight:
                wait_for(phase_started(instance, run.run_id, "algorithm"), 120, "the algorithm to start")
            # No connect retries (IMPATIENT): whatever waits for the new image is the worker's doing.
            impatient = instance.run_launcher
            assert isinstance(impatient, WarmRunLauncher)
            before = ready_count(home)
            assert protocol.request(worker.socket, {"cmd": "reload"})["ok"]
            # Sent right after the reload's answer: the old image is closing or the new one is
            # importing Dagster and the code location, so these reach the worker mid-re-exec.
            health: dict[str, Any] = {}

            def check(run: dg.DagsterRun) -> None:
                health[run.run_id] = impatient.check_run_worker_health(run)

            checks = [threading.Thread(target=check, args=(run,)) for run in in_flight]
            for thread in checks:
                thread.start()
            during = [create(instance, workflow(home, origin, SLOW)) for _ in range(DURING)]
            launched: dict[str, BaseException | None] = {}

            def start(run: dg.DagsterRun) -> None:
                try:
                    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
                    launched[run.run_id] = None
                except BaseException as error:  # reported by the assertion below
                    launched[run.run_id] = error

            starts = [threading.Thread(target=start, args=(run,)) for run in during]
            for thread in starts:
                thread.start()
            for thread in [*checks, *starts]:
                thread.join(120)
            wait_for(lambda: ready_count(home) > before, 120, "the re-exec")
            # The health checks waited for the new image, which had adopted the runs: they run, or
            # finished (reaped by the new image) while it imported; never UNKNOWN, which run
            # monitoring fails a run for.
            assert set(health) == {run.run_id for run in in_flight}, health
            assert all(result.status in HEALTHY for result in health.values()), health
            # The launches were taken, not refused, and by the new image: it had to be up to answer.
            assert launched == {run.run_id: None for run in during}, launched
            log = (home / "worker.log").read_text()
            last_ready = log.rindex(" ready on ")
            for run in during:
                assert log.find(f"run {run.run_id}: process", last_ready) > 0, log[-3000:]
            answer = protocol.request(worker.socket, {"cmd": "ping"})
            assert answer["pid"] == worker.process.pid
            for run in [*in_flight, *during]:
                done = ended(instance, run.run_id, timeout=180)
                assert done.status == dg.DagsterRunStatus.SUCCESS, messages(instance, run.run_id)[-3000:]
                assert done.tags[engine.STATUS] == "70"
    finally:
        worker.stop()
