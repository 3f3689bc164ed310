"""Queue visibility and the queue wait limit, on the real embedded stack (webserver, daemon, Provider).

`ocean-compute` runs 2 jobs at once (maxJobs); a third waits in Dagster's queue. The Provider's job
JSON shows it at status 1 with `queuePosition` 1; with C2D_MAX_QUEUE_WAIT=5 the watchdog sensor then
ends it: status 2 "Job expired in queue", finished, not a stop request, and its agreement is free.
The sensor only asks; the daemon launches a `queue_expiry_job` run that ends the job, and that run
never shows as a consumer's job nor counts against the environment's maxJobs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from c2d_defs.maintenance import MAINTENANCE, targets_of
from provider_api.dagster_jobs import DagsterJobs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = "ocean-compute"  # maxJobs 2
QUEUE_LIMIT = 5
SLOW = "import time; time.sleep(40)"


@pytest.fixture(scope="module")
def watched_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    # One stack for the module: each test fills the queue itself, a second stack would only cost time.
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("C2D_MAX_QUEUE_WAIT", str(QUEUE_LIMIT))
        monkeypatch.setenv("C2D_WATCHDOG_INTERVAL", "1")
        home = tmp_path_factory.mktemp("watchdog") / ".c2d"
        running, _ = stack.up(home, port=stack._free_port())
        try:
            yield running
        finally:
            stack.down(home)


def _job_json(provider_url: str, workflow: Workflow) -> dict:
    response = httpx.get(
        f"{provider_url}/api/services/compute",
        params={"consumerAddress": workflow.owner, "jobId": workflow.job_id},
        timeout=10,
    )
    response.raise_for_status()
    [job] = response.json()
    return job


def test_queued_job_shows_its_position_then_expires_with_status_2(watched_stack: stack.Stack) -> None:
    key_file = EngineSettings(home=Path(watched_stack.home)).resolved_provider_key_file
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(
            f"{watched_stack.webserver_url}/graphql", dagster_home=watched_stack.dagster_home
        ) as operator,
    ):
        base = demo_workflow(origin.url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)

        def workflow(code: str) -> Workflow:
            agreement = "0x" + uuid.uuid4().hex * 2
            raw = {**base, "jobId": uuid.uuid4().hex, "agreementId": agreement}
            raw["algorithm"] = {**base["algorithm"], "rawcode": code}
            return Workflow.model_validate(raw)

        busy = [workflow(SLOW), workflow(SLOW)]
        for item in busy:
            operator.submit(item)
        waiting = workflow(SLOW)
        operator.submit(waiting)
        try:
            # Right after the submits all three may be queued; the position counts the jobs ahead.
            job = _job_json(watched_stack.provider_url, waiting)
            assert job["status"] == 1 and job["queuePosition"] in (1, 2, 3), job
            deadline = time.monotonic() + QUEUE_LIMIT - 1
            while operator.current_jobs(ENV) != (2, 1):
                assert time.monotonic() < deadline, operator.current_jobs(ENV)
                time.sleep(0.1)
            job = _job_json(watched_stack.provider_url, waiting)
            assert job["status"] == 1 and job["queuePosition"] == 1, job
            assert job["dateFinished"] is None and job["runStatus"] == "QUEUED"

            deadline = time.monotonic() + 30
            # The expiry writes the job's status, then cancels its run: wait for both (the run's
            # CANCELING in between is what a poll at that moment rightly shows).
            while job["status"] == 1 or job["runStatus"] == "CANCELING":
                assert time.monotonic() < deadline, job
                time.sleep(0.5)
                job = _job_json(watched_stack.provider_url, waiting)
            assert (job["status"], job["statusText"]) == (2, "Job expired in queue"), job
            assert job["runStatus"] == "CANCELED" and job["stopreq"] == 0
            assert f"more than {QUEUE_LIMIT} s" in job["statusDetail"]
            assert isinstance(job["dateFinished"], str) and job["queuePosition"] is None
            assert job["results"] == ""
            # It waited at least the limit, and the jobs that were running are untouched.
            assert float(job["dateFinished"]) - float(job["dateCreated"]) >= QUEUE_LIMIT
            assert operator.current_jobs(ENV) == (2, 0)
            for item in busy:
                running = _job_json(watched_stack.provider_url, item)
                assert running["status"] < 70 and running["queuePosition"] is None
        finally:
            for item in busy:
                operator.stop(item.job_id)


def test_the_queue_expiry_run_is_no_consumer_job(watched_stack: stack.Stack) -> None:
    """The run that ended a queued job is a `queue_expiry_job` run in Dagster, never a consumer's job."""
    waited = _expire_one_queued_job(watched_stack)
    owner = waited.workflow.owner
    with dg.DagsterInstance.from_config(watched_stack.dagster_home) as instance:
        deadline = time.monotonic() + 30
        while not (done := [run for run in _maintenance_runs(instance, waited.run_id) if run.is_finished]):
            assert time.monotonic() < deadline, "no queue_expiry_job run ended the job"
            time.sleep(0.5)
        [run] = done
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags[MAINTENANCE] == "queue_expiry" and run.tags["c2d/kind"] == "maintenance"
        assert not {engine.ENVIRONMENT, engine.OWNER, engine.JOB_ID, engine.AGREEMENT_ID} & set(run.tags)
        compute_jobs = {
            record.tags[engine.JOB_ID]
            for record in instance.get_runs(
                filters=dg.RunsFilter(job_name=engine.JOB_NAME, tags={engine.OWNER: owner})
            )
        }
    # What the Provider lists for the consumer (its operator's query) is exactly its compute jobs.
    with DagsterJobs(
        f"{watched_stack.webserver_url}/graphql", dagster_home=watched_stack.dagster_home
    ) as operator:
        listed = operator.jobs(owner=owner)
        assert {record.tags[engine.JOB_ID] for record in listed} == compute_jobs
        assert run.run_id not in {record.run_id for record in listed}
        assert (
            operator.current_jobs(ENV)[1] == 0
        )  # nothing queued: the maintenance run never was one of ENV's
    assert waited.workflow.job_id in compute_jobs
    job = _job_json(watched_stack.provider_url, waited.workflow)
    assert (job["status"], job["jobId"]) == (2, waited.workflow.job_id)


class _Waited:
    def __init__(self, workflow: Workflow, run_id: str) -> None:
        self.workflow = workflow
        self.run_id = run_id


def _expire_one_queued_job(running: stack.Stack) -> _Waited:
    """Fill ocean-compute (maxJobs 2), queue a third job and wait until the watchdog ended it."""
    key_file = EngineSettings(home=Path(running.home)).resolved_provider_key_file
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=running.dagster_home) as operator,
    ):
        base = demo_workflow(origin.url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)

        def workflow() -> Workflow:
            raw = {**base, "jobId": uuid.uuid4().hex, "agreementId": "0x" + uuid.uuid4().hex * 2}
            raw["algorithm"] = {**base["algorithm"], "rawcode": SLOW}
            return Workflow.model_validate(raw)

        busy = [workflow(), workflow()]
        for item in busy:
            operator.submit(item)
        waiting = workflow()
        record = operator.submit(waiting)
        try:
            deadline = time.monotonic() + 40
            while _job_json(running.provider_url, waiting)["status"] == 1:
                assert time.monotonic() < deadline, "the queued job never expired"
                time.sleep(0.5)
            assert _job_json(running.provider_url, waiting)["status"] == 2
        finally:
            for item in busy:
                operator.stop(item.job_id)
        return _Waited(waiting, record.run_id)


def _maintenance_runs(instance: dg.DagsterInstance, target: str) -> list[dg.DagsterRun]:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="queue_expiry_job"))
    return [run for run in runs if target in targets_of(run, "expire_queued")]
