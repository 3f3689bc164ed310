"""kill -9 of the warm run worker (c2d_defs/warm_launcher) while a job's algorithm runs, on the embedded
stack as `c2d dev up` starts it with no option (the warm worker is the embedded default's launcher).
`stack_health.check` (`c2d dev status`) lists the worker, healthy, then down once killed; `stack.down`
stops the new one.

The run's process dies with the worker (PDEATHSIG) and its sandbox with it (bwrap --die-with-parent).
Run monitoring's health check (C2D_RUN_MONITORING_INTERVAL=2 here) finds no worker and fails the run;
the stage watchdog (C2D_WATCHDOG_INTERVAL=1) tags 41 and asks for a salvage run. A job submitted while
the worker is down is not lost: its launch finds no worker and the queue takes it back (Dagster's
retry for an unreachable code server). `stack.up` (what `c2d dev up` runs) starts a new worker; the
salvage and the waiting job are then launched, the first job ends 41 with its logs and the second 70.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from faultkit import dagster_instance, demo_job, finished_job, kill9, run_of, wait_for

from c2d_cli import stack, stack_health
from c2d_cli.origin import LocalOrigin
from c2d_cli.processes import alive
from c2d_cli.provider_client import ProviderClient
from c2d_core import engine
from c2d_core.chain import dev_accounts
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from c2d_defs.pods import layout
from c2d_defs.warm_launcher import WORKER_PID_TAG
from provider_api.dagster_jobs import DagsterJobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
STAGE_ROOT = Path("/run/c2d-sandbox/stage")
OWNER = dev_accounts(3)[2]
SLEEPER = "import time; print('algorithm started', flush=True); time.sleep(60)"


def _owned(workflow: Workflow) -> Workflow:
    # The owner whose key signs the result download; demo_job gave it fresh job and agreement ids.
    return workflow.model_copy(update={"owner": OWNER.address})


def _sandbox_processes(job_id: str) -> list[int]:
    marker = f"{STAGE_ROOT}/{job_id}-".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture
def warm_stack(tmp_path: Path) -> Iterator[stack.Stack]:
    home = tmp_path / ".c2d"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("C2D_WATCHDOG_INTERVAL", "1")
        patch.setenv("C2D_RUN_MONITORING_INTERVAL", "2")
        # No run_launcher: the embedded dagster.yaml's, which names the warm worker.
        running, _ = stack.up(home, port=stack._free_port(), provider_port=stack._free_port())
    try:
        yield running
    finally:
        last = stack.read_stack(home)
        stack.down(home)
        if last is not None and last.worker_pid:
            wait_for(lambda: not alive(last.worker_pid), 10, "`down` to stop the warm worker")


def _worker_health(running: stack.Stack) -> stack_health.PartHealth:
    [part] = [part for part in stack_health.check(running) if part.name == "worker"]
    return part


def _messages(instance: Any, run_id: str) -> str:
    return "\n".join(entry.message or "" for entry in instance.all_logs(run_id))


@pytest.mark.timeout(240)
def test_worker_killed_while_the_algorithm_runs(warm_stack: stack.Stack) -> None:
    home = Path(warm_stack.home)
    assert warm_stack.worker_pid and alive(warm_stack.worker_pid), "the embedded default starts no worker"
    assert _worker_health(warm_stack).healthy  # its socket accepts
    key_file = EngineSettings(home=home).resolved_provider_key_file
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(f"{warm_stack.webserver_url}/graphql", dagster_home=warm_stack.dagster_home) as operator,
        dagster_instance(home) as instance,
    ):
        sleeper = _owned(demo_job(origin.url, key_file, SLEEPER))
        record = operator.submit(sleeper)
        wait_for(
            lambda: (
                (run := run_of(instance, sleeper.job_id)) is not None
                and engine.phase_tag("algorithm", "started") in run.tags
                and _sandbox_processes(sleeper.job_id)
            ),
            60,
            "the algorithm's pod to run",
        )
        # The pod has written the line the consumer must get back: the kill cannot come first.
        log = EngineSettings(home=home).resolved_work_dir / sleeper.job_id / layout.ALGORITHM_LOG
        wait_for(
            lambda: log.exists() and "algorithm started" in log.read_text(errors="replace"),
            30,
            "the algorithm's log line",
        )
        run_process = int(instance.get_run_by_id(record.run_id).tags[WORKER_PID_TAG])
        kill9(warm_stack.worker_pid)
        dead = _worker_health(warm_stack)
        assert not dead.alive and not dead.healthy and dead.detail == "not running"
        # The run's process and its sandbox die with the worker.
        wait_for(lambda: not alive(run_process), 10, "the run's process to die with the worker")
        wait_for(lambda: not _sandbox_processes(sleeper.job_id), 10, "the sandbox to die")

        # Submitted while no worker runs: taken back into the queue, never failed.
        waiting = _owned(demo_job(origin.url, key_file, "print('after the crash')"))
        waiting_run = operator.submit(waiting).run_id
        wait_for(
            lambda: "re-submitting the run into the queue" in _messages(instance, waiting_run),
            60,
            "the queue to take the run back",
        )
        assert instance.get_run_by_id(waiting_run).status in (
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.STARTING,
        )

        # Run monitoring's health check finds no worker and fails the run.
        wait_for(
            lambda: instance.get_run_by_id(record.run_id).status == dg.DagsterRunStatus.FAILURE,
            60,
            "run monitoring to fail the run",
        )
        assert "Detected run worker status" in _messages(instance, record.run_id)

        # What `c2d dev up` does with a stack whose worker died: a new worker, the rest reused.
        restarted, reused = stack.up(home)
        assert reused and restarted.worker_pid != warm_stack.worker_pid and alive(restarted.worker_pid)
        assert restarted.webserver_pid == warm_stack.webserver_pid
        assert restarted.daemon_pid == warm_stack.daemon_pid
        assert _worker_health(restarted).healthy

        job = finished_job(warm_stack.provider_url, sleeper, timeout=120)
        assert job["status"] == 41 and job["runStatus"] == "FAILURE", job
        assert "run worker died" in job["statusDetail"] and "published" in job["statusDetail"], job
        [log] = [item for item in job["results"] if item["type"] == "algorithmLog"]
        provider = ProviderClient(warm_stack.provider_url)
        try:
            response = provider.result(OWNER, sleeper.job_id, log["index"])
        finally:
            provider.close()
        assert response.status_code == 200 and "algorithm started" in response.text
        assert list(STAGE_ROOT.glob(f"{sleeper.job_id}-*")) == []

        after = finished_job(warm_stack.provider_url, waiting, timeout=120)
        assert after["status"] == 70, after
        # It ran in the new worker.
        assert instance.get_run_by_id(waiting_run).tags[WORKER_PID_TAG] != str(run_process)
