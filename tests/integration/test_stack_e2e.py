"""The real embedded stack: dagster-webserver + dagster-daemon on 127.0.0.1, a job submitted over
Dagster's GraphQL API (by the Provider's operator, with no Provider in front), its input served by a
local HTTP origin, results checked byte for byte."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from c2d_cli import stack
from c2d_cli.consumer import poll_until
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_cli.processes import alive
from c2d_core import engine
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.dagster_jobs import DagsterJobs
from provider_api.jobs import JobRecord

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class RunView:
    """A compute_job run as these tests read it: Dagster's run status, and the Ocean status in its tags."""

    record: JobRecord

    @property
    def run_status(self) -> str:
        return self.record.run_status

    @property
    def tags(self) -> dict[str, str]:
        return self.record.tags

    @property
    def status(self) -> int:
        return int(self.tags.get(engine.STATUS, "1"))

    @property
    def status_text(self) -> str:
        return self.tags.get(engine.STATUS_TEXT, "Warming up")

    @property
    def results(self) -> list[dict[str, Any]]:
        return list(json.loads(self.tags.get(engine.RESULTS, "[]")))


def submit(running: stack.Stack, workflow: Workflow) -> str:
    """Launch compute_job for `workflow` as the Provider does; the Dagster run id."""
    with DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=running.dagster_home) as operator:
        return operator.submit(workflow).run_id


def read_job(running: stack.Stack, job_id: str) -> RunView:
    with DagsterJobs(f"{running.webserver_url}/graphql", dagster_home=running.dagster_home) as operator:
        record = operator.job(job_id)
    assert record is not None, f"no run for job {job_id}"
    return RunView(record)


def wait_for_job(
    running: stack.Stack,
    job_id: str,
    timeout: float,
    until: Callable[[RunView], bool] = lambda view: view.record.run_ended,
    on_change: Callable[[RunView], None] | None = None,
) -> RunView:
    """Poll the run until `until` (by default: it ended); `on_change` sees each new (status, run status)."""
    last: list[tuple[int, str]] = []

    def observe(view: RunView) -> None:
        if on_change is not None and last[-1:] != [(view.status, view.run_status)]:
            last[:] = [(view.status, view.run_status)]
            on_change(view)

    return poll_until(
        lambda: read_job(running, job_id), until, timeout=timeout, interval=0.2, on_poll=observe
    )


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("stack") / ".c2d"
    running, reused = stack.up(home, port=stack._free_port())
    assert not reused
    try:
        yield running
    finally:
        assert stack.down(home)
        for pid in (running.webserver_pid, running.daemon_pid):
            assert not alive(pid)


def test_stack_is_reused_and_renders_queue_limits(running_stack: stack.Stack) -> None:
    again, reused = stack.up(Path(running_stack.home))
    assert reused and again.webserver_pid == running_stack.webserver_pid
    instance = (Path(running_stack.home) / "dagster.yaml").read_text()
    assert "c2d/environment" in instance and "ocean-compute" in instance
    info = json.loads((Path(running_stack.home) / "stack.json").read_text())
    assert info["webserver_url"].startswith("http://127.0.0.1:")


def test_job_through_graphql_reaches_70_with_manifest_and_outputs(running_stack: stack.Stack) -> None:
    home = Path(running_stack.home)
    settings = EngineSettings(home=home)
    with LocalOrigin(EXAMPLES) as origin:
        workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
        run_id = submit(running_stack, workflow)
        seen: list[int] = []
        view = wait_for_job(
            running_stack, workflow.job_id, timeout=120, on_change=lambda v: seen.append(v.status)
        )
    assert view.run_status == "SUCCESS", view.tags
    assert view.status == 70 and view.status_text == "Job finished"
    assert seen[0] in (1, 20, 30, 40, 60, 70) and seen[-1] == 70
    assert view.tags[engine.JOB_ID] == workflow.job_id
    assert view.tags[engine.ENVIRONMENT] == "ocean-compute"
    manifest = view.results
    assert [entry["type"] for entry in manifest] == [
        "output",
        "algorithmLog",
        "configurationLog",
        "publishLog",
        "attestation",
    ]
    summary_entry = manifest[0]
    summary = (settings.resolved_results_dir / workflow.job_id / "summary.json").read_bytes()
    assert summary_entry["filename"] == "summary.json" and summary_entry["filesize"] == len(summary)
    assert summary_entry["sha256"] == hashlib.sha256(summary).hexdigest()
    cities = json.loads(summary)["cities"]
    assert cities["Lisbon"]["count"] == 4 and cities["Berlin"]["max"] == 7.4
    # The operator's view: the run has the three ops, each succeeded.
    query = (
        """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { stepStats { stepKey status } } } }"""
    )
    answer = httpx.post(
        f"{running_stack.webserver_url}/graphql",
        json={"query": query, "variables": {"runId": run_id}},
        timeout=10,
    ).json()
    steps = {s["stepKey"]: s["status"] for s in answer["data"]["runOrError"]["stepStats"]}
    # leak_filter: the output stages' op, which hands the job on where the environment lists none.
    assert steps == {
        "configure": "SUCCESS",
        "run_algorithm": "SUCCESS",
        "leak_filter": "SUCCESS",
        "publish": "SUCCESS",
    }
    # The dataset's location is nowhere in the run's config as stored by Dagster.
    config_query = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { runConfigYaml } } }"""
    run_config = httpx.post(
        f"{running_stack.webserver_url}/graphql",
        json={"query": config_query, "variables": {"runId": run_id}},
        timeout=10,
    ).json()["data"]["runOrError"]["runConfigYaml"]
    assert "weather.csv" not in run_config and "127.0.0.1" not in run_config


def test_stopping_a_running_job_kills_the_algorithm_and_still_publishes(running_stack: stack.Stack) -> None:
    from dagster_graphql import DagsterGraphQLClient

    home = Path(running_stack.home)
    settings = EngineSettings(home=home)
    slow = (
        "import time\nopen('/data/outputs/partial.txt', 'w').write('half')\n"
        "print('working', flush=True)\ntime.sleep(120)\n"
    )
    with LocalOrigin(EXAMPLES) as origin:
        workflow = demo_workflow(origin.url, settings.resolved_provider_key_file)
        workflow = workflow.model_copy(
            update={"algorithm": workflow.algorithm.model_copy(update={"rawcode": slow})}
        )
        run_id = submit(running_stack, workflow)
        wait_for_job(running_stack, workflow.job_id, timeout=60, until=lambda view: view.status == 40)
        # Wait until the algorithm has written its partial output into the job volume.
        partial = settings.resolved_work_dir / workflow.job_id / "data" / "outputs" / "partial.txt"
        poll_until(partial.exists, bool, timeout=60, interval=0.1)
        DagsterGraphQLClient(
            running_stack.webserver_host, port_number=running_stack.webserver_port
        ).terminate_run(run_id)
        view = wait_for_job(running_stack, workflow.job_id, timeout=60)
    assert view.run_status == "CANCELED"
    assert view.status == 70 and view.tags[engine.STOP_REQUESTED] == "1"
    assert view.tags[engine.ALGORITHM_TERMINATION] == "Stopped"
    names = [entry["filename"] for entry in view.results]
    assert "partial.txt" in names and "algorithm.log" in names
    log = (settings.resolved_results_dir / workflow.job_id / "algorithm.log").read_text()
    assert "working" in log
