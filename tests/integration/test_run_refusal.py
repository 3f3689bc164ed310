"""No free re-runs (issue 16, item 2): through the GraphQL API the Dagster UI uses, against the real
embedded stack, "Re-execute all", re-execution from failure and launchpad runs of a paid job refuse to
run (no data touched), and the Provider's job list shows only the job's own run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.run_stamp import stamp_key_from_file
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.dagster_jobs import DagsterJobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}

_REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture(scope="module")
def refusing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    home = tmp_path_factory.mktemp("refusal") / ".c2d"
    with pytest.MonkeyPatch.context() as patch:
        # Inherited by the webserver and the daemon: a run without the Provider's stamp is refused.
        patch.setenv("C2D_REQUIRE_RUN_STAMP", "true")
        running, _ = stack.up(home, port=stack._free_port())
    try:
        yield running
    finally:
        stack.down(home)


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(url, json={"query": query, "variables": variables}, timeout=30).json()
    assert not answer.get("errors"), answer
    return answer["data"]


def _launched(result: dict[str, Any]) -> str:
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def _ended(instance: dg.DagsterInstance, run_id: str, timeout: float = 120) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status.value in ENDED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} did not end"
        time.sleep(0.3)


def _ran_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return {record.event_log_entry.step_key for record in records if record.event_log_entry.step_key}


def test_reexecutions_and_launchpad_runs_of_a_paid_job_are_refused(refusing_stack: stack.Stack) -> None:
    home = Path(refusing_stack.home)
    url = f"{refusing_stack.webserver_url}/graphql"
    key_file = EngineSettings(home=home).resolved_provider_key_file
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(
            url, stamp_key=stamp_key_from_file(key_file), dagster_home=refusing_stack.dagster_home
        ) as provider,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        base = demo_workflow(origin.url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)
        agreement = "0x" + uuid.uuid4().hex * 2
        workflow = Workflow.model_validate({**base, "jobId": uuid.uuid4().hex, "agreementId": agreement})
        job = provider.submit(workflow)
        original = _ended(instance, job.run_id)
        assert original.status == dg.DagsterRunStatus.SUCCESS, original.tags.get(engine.STATUS_DETAIL)
        assert original.tags[engine.STATUS] == "70" and engine.STAMP in original.tags

        refused: dict[str, dg.DagsterRun] = {}
        params = {"parentRunId": job.run_id, "strategy": "ALL_STEPS"}
        result = _graphql(url, _REEXECUTE, {"params": params})["launchPipelineReexecution"]
        refused["ALL_STEPS"] = _ended(instance, _launched(result))

        # Re-execution from failure of a job whose algorithm failed: it runs from run_algorithm on.
        failing = Workflow.model_validate(
            {
                **base,
                "jobId": uuid.uuid4().hex,
                "agreementId": "0x" + uuid.uuid4().hex * 2,
                "algorithm": {**base["algorithm"], "rawcode": "import sys; sys.exit(1)"},
            }
        )
        failed_job = provider.submit(failing)
        assert _ended(instance, failed_job.run_id).status == dg.DagsterRunStatus.FAILURE
        params = {"parentRunId": failed_job.run_id, "strategy": "FROM_FAILURE"}
        result = _graphql(url, _REEXECUTE, {"params": params})["launchPipelineReexecution"]
        from_failure = _ended(instance, _launched(result))
        assert from_failure.status == dg.DagsterRunStatus.FAILURE
        said = [entry.message or "" for entry in instance.all_logs(from_failure.run_id)]
        assert not any("algorithm pod ended" in line or "publish pod ended" in line for line in said)
        assert [r.run_id for r in provider.jobs(job_id=failing.job_id)] == [failed_job.run_id]
        # The launchpad: the job's run config with its tags (the UI copies both) and with none.
        selector = {"repositoryLocationName": engine.LOCATION, "repositoryName": engine.REPOSITORY}
        launchpad = {
            "selector": {**selector, "jobName": engine.JOB_NAME},
            "runConfigData": engine.run_config(workflow),
        }
        copied = [
            {"key": key, "value": value} for key, value in original.tags.items() if key.startswith("c2d/")
        ]
        copied.append({"key": engine.STAMP, "value": original.tags[engine.STAMP]})
        for name, tags in (("launchpad copy", copied), ("launchpad bare", [])):
            params = {**launchpad, "executionMetadata": {"tags": tags}}
            refused[name] = _ended(
                instance, _launched(_graphql(url, _LAUNCH, {"params": params})["launchRun"])
            )
        # A made-up job (a new job id) with the Provider's tags but no stamp.
        forged = {
            **workflow.model_dump(by_alias=True, mode="json", exclude_none=True),
            "jobId": uuid.uuid4().hex,
        }
        params = {
            **launchpad,
            "runConfigData": engine.run_config(forged),
            "executionMetadata": {"tags": [{"key": engine.JOB_ID, "value": forged["jobId"]}]},
        }
        refused["forged"] = _ended(
            instance, _launched(_graphql(url, _LAUNCH, {"params": params})["launchRun"])
        )

        reasons = {name: run.tags.get(engine.REFUSED, "") for name, run in refused.items()}
        assert "re-executes run" in reasons["ALL_STEPS"]
        assert "already has its run" in reasons["launchpad copy"]
        assert "does not name its workflow's job" in reasons["launchpad bare"]
        assert "no Provider stamp" in reasons["forged"]
        for name, run in refused.items():
            assert run.status == dg.DagsterRunStatus.FAILURE, name
            # Refused at once: nothing fetched, run or published, and no job status written.
            assert _ran_steps(instance, run.run_id) == {"configure"}, name
            assert engine.phase_tag("configure", "started") not in run.tags or run.tags.get(
                engine.phase_tag("configure", "started")
            ) == original.tags.get(engine.phase_tag("configure", "started")), name
        # The consumer's list and the job's record show the job's own run only, unchanged.
        listed = provider.jobs(owner=workflow.owner)
        assert [record.run_id for record in listed if record.job_id == workflow.job_id] == [job.run_id]
        assert all(record.run_id not in {r.run_id for r in refused.values()} for record in listed)
        again = provider.job(workflow.job_id)
        assert again is not None and again.run_id == job.run_id and again.tags[engine.STATUS] == "70"
