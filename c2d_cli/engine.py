"""Talking to the compute engine over Dagster's GraphQL API: submit a workflow, read a job's state.

Until the Provider exists this is how the demo and the tests start jobs; the Provider's operator
module does the same over the same API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from c2d_core import job_tags
from c2d_core.environments import Environments
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow

JOB_NAME = "compute_job"
LOCATION = "c2d"
REPOSITORY = "__repository__"
TERMINAL_RUN_STATES = {"SUCCESS", "FAILURE", "CANCELED"}

_RUN_QUERY = """
query JobRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status creationTime startTime endTime tags { key value } }
    ... on PythonError { message }
  }
}
"""


@dataclass
class JobView:
    run_id: str
    run_status: str
    tags: dict[str, str] = field(default_factory=dict)
    created: float | None = None
    ended: float | None = None

    @property
    def status(self) -> int:
        return int(self.tags.get(job_tags.STATUS, "1"))

    @property
    def status_text(self) -> str:
        return self.tags.get(job_tags.STATUS_TEXT, "Warming up")

    @property
    def detail(self) -> str:
        return self.tags.get(job_tags.STATUS_DETAIL, "")

    @property
    def results(self) -> list[dict[str, Any]]:
        return list(json.loads(self.tags.get(job_tags.RESULTS, "[]")))

    @property
    def finished(self) -> bool:
        return self.run_status in TERMINAL_RUN_STATES


def submit(host: str, port: int, workflow: Workflow) -> str:
    """Submit `compute_job` for `workflow`; returns the Dagster run id."""
    from dagster_graphql import DagsterGraphQLClient

    settings = EngineSettings()
    max_runtime = Environments.load(settings.environments_file).max_runtime(workflow.environment, settings)
    client = DagsterGraphQLClient(host, port_number=port, timeout=30)
    return client.submit_job_execution(
        JOB_NAME,
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config={
            "ops": {
                "configure": {
                    "config": {"workflow": workflow.model_dump(by_alias=True, mode="json", exclude_none=True)}
                }
            }
        },
        tags=job_tags.submission_tags(workflow, max_runtime),
    )


def read_job(url: str, run_id: str) -> JobView:
    answer = httpx.post(
        f"{url}/graphql", json={"query": _RUN_QUERY, "variables": {"runId": run_id}}, timeout=10
    ).json()
    run = answer["data"]["runOrError"]
    if run["__typename"] != "Run":
        raise LookupError(f"run {run_id}: {run.get('message', run['__typename'])}")
    return JobView(
        run_id=run_id,
        run_status=run["status"],
        tags={item["key"]: item["value"] for item in run["tags"]},
        created=run.get("creationTime"),
        ended=run.get("endTime"),
    )


def wait_for_job(
    url: str,
    run_id: str,
    timeout: float,
    poll: float = 0.2,
    on_change: Callable[[JobView], None] | None = None,
) -> JobView:
    """Poll until the run ends; calls `on_change` whenever the job's Ocean status moves."""
    deadline = time.monotonic() + timeout
    last: tuple[int, str] | None = None
    while True:
        view = read_job(url, run_id)
        if on_change and (view.status, view.run_status) != last:
            last = (view.status, view.run_status)
            on_change(view)
        if view.finished:
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"run {run_id} still {view.run_status} at status {view.status} after {timeout:.0f} s"
            )
        time.sleep(poll)
