"""Queue visibility and the queue wait limit, on the real embedded stack (webserver, daemon, Provider).

`ocean-compute` runs 2 jobs at once (maxJobs); a third waits in Dagster's queue. The Provider's job
JSON shows it at status 1 with `queuePosition` 1; with C2D_MAX_QUEUE_WAIT=5 the watchdog sensor then
ends it: status 2 "Job expired in queue", finished, not a stop request, and its agreement is free.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.operator import Operator

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = "ocean-compute"  # maxJobs 2
QUEUE_LIMIT = 5
SLOW = "import time; time.sleep(40)"


@pytest.fixture
def watched_stack(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[stack.Stack]:
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
    with LocalOrigin(EXAMPLES) as origin, Operator(f"{watched_stack.webserver_url}/graphql") as operator:
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
            while job["status"] == 1:
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
