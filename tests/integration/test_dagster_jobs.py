"""provider_api.dagster_jobs against the real embedded stack (dagster-webserver + daemon on 127.0.0.1):
submit (GraphQL), read back (run storage), Ocean's job JSON, idempotent retries, one job per
agreement, stop, queue counts, and who stopped a job: a consumer through the Provider's HTTP API or
an operator through Dagster's GraphQL API, as the UI does."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from c2d_cli import stack
from c2d_cli.demo import demo_workflow
from c2d_cli.origin import LocalOrigin
from c2d_cli.provider_client import ProviderClient
from c2d_core import engine
from c2d_core.chain import dev_accounts
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.dagster_jobs import BackendUnavailable, DagsterJobs, JobConflict, JobNotFound
from provider_api.jobs import JobRecord, ocean_job_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = "ocean-compute"  # maxJobs 2 in config/environments.yaml
SLOW_ALGORITHM = "import time; time.sleep(30)"
OCEAN_KEYS = {
    "agreementId",
    "jobId",
    "owner",
    "status",
    "statusText",
    "dateCreated",
    "dateFinished",
    "results",
    "stopreq",
    "removed",
    "algoDID",
    "inputDID",
}
OUR_KEYS = {
    "statusDetail",
    "phases",
    "terminationDetails",
    "runStatus",
    "resultsExpired",
    "resultsDid",
    "stoppedBy",
    "stoppedAt",
}
# What the Dagster UI sends when an operator clicks Terminate.
TERMINATE_MUTATION = """
mutation Terminate($runId: String!) { terminateRun(runId: $runId) { __typename } }
"""


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    home = tmp_path_factory.mktemp("operator") / ".c2d"
    running, reused = stack.up(home, port=stack._free_port())
    assert not reused
    try:
        yield running
    finally:
        stack.down(home)


@pytest.fixture(scope="module")
def operator(running_stack: stack.Stack) -> Iterator[DagsterJobs]:
    with DagsterJobs(f"{running_stack.webserver_url}/graphql", dagster_home=running_stack.home) as client:
        yield client


@pytest.fixture(scope="module")
def make_workflow(running_stack: stack.Stack) -> Iterator[Callable[..., Workflow]]:
    key_file = EngineSettings(home=Path(running_stack.home)).resolved_provider_key_file
    with LocalOrigin(EXAMPLES) as origin:
        base = demo_workflow(origin.url, key_file).model_dump(by_alias=True, mode="json", exclude_none=True)

        def make(agreement: str, rawcode: str | None = None, owner: str | None = None) -> Workflow:
            raw = {
                **base,
                "jobId": uuid.uuid4().hex,
                "agreementId": agreement,
                **({"owner": owner} if owner else {}),
            }
            if rawcode is not None:
                raw["algorithm"] = {**base["algorithm"], "rawcode": rawcode}
            return Workflow.model_validate(raw)

        yield make


def agreement() -> str:
    return "0x" + uuid.uuid4().hex * 2


def wait_for(
    operator: DagsterJobs, job_id: str, done: Callable[[JobRecord], bool], timeout: float, poll: float = 0.2
) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = operator.job(job_id)
        assert record is not None
        if done(record):
            return record
        assert time.monotonic() < deadline, f"job {job_id} stuck: {ocean_job_json(record)}"
        time.sleep(poll)


def assert_ocean_shape(job: dict) -> None:
    assert set(job) == OCEAN_KEYS | OUR_KEYS
    for key in ("agreementId", "jobId", "owner", "statusText", "dateCreated", "algoDID", "statusDetail"):
        assert isinstance(job[key], str), key
    for key in ("status", "stopreq", "removed"):
        assert type(job[key]) is int, key
    assert float(job["dateCreated"]) > 0
    assert job["dateFinished"] is None or float(job["dateFinished"]) >= float(job["dateCreated"])
    assert isinstance(job["inputDID"], list) and all(isinstance(d, str) for d in job["inputDID"])
    assert job["results"] == "" or isinstance(job["results"], list)
    assert set(job["phases"]) == {"configure", "algorithm", "publish"}
    assert set(job["terminationDetails"]) == {"exitCode", "OOMKilled", "reason"}


def test_submit_read_back_and_job_json(operator: DagsterJobs, make_workflow: Callable[..., Workflow]) -> None:
    order = agreement()
    workflow = make_workflow(order)
    record = operator.submit(workflow)
    assert record.job_id == workflow.job_id and record.run_status in ("QUEUED", "NOT_STARTED", "STARTING")
    first = ocean_job_json(record)
    assert_ocean_shape(first)
    assert (first["status"], first["statusText"], first["dateFinished"], first["results"]) == (
        1,
        "Warming up",
        None,
        "",
    )

    # A retried submit of the same job returns the same run and launches nothing.
    assert operator.submit(workflow).run_id == record.run_id
    assert [r.run_id for r in operator.jobs(job_id=workflow.job_id)] == [record.run_id]
    assert [r.run_id for r in operator.jobs(agreement_id=order)] == [record.run_id]
    assert record.run_id in [r.run_id for r in operator.jobs(owner=workflow.owner)]
    assert operator.jobs(owner=workflow.owner, job_id=uuid.uuid4().hex) == []
    assert operator.job(uuid.uuid4().hex) is None
    with pytest.raises(ValueError):
        operator.jobs()

    done = wait_for(operator, workflow.job_id, lambda r: r.finished and r.run_ended, timeout=60)
    job = ocean_job_json(done)
    assert_ocean_shape(job)
    assert job["jobId"] == workflow.job_id and job["agreementId"] == order
    assert job["owner"] == workflow.owner and job["algoDID"] == "raw"
    assert job["inputDID"] == workflow.dids
    assert (job["status"], job["statusText"], job["stopreq"], job["removed"]) == (70, "Job finished", 0, 0)
    assert job["runStatus"] == "SUCCESS" and job["statusDetail"] == ""
    assert isinstance(job["dateFinished"], str) and float(job["dateFinished"]) > float(job["dateCreated"])
    assert [(r["index"], r["type"]) for r in job["results"]] == [
        (0, "output"),
        (1, "algorithmLog"),
        (2, "configurationLog"),
        (3, "publishLog"),
        (4, "attestation"),
    ]
    for entry in job["results"]:
        assert set(entry) == {"filename", "filesize", "type", "index"}
        assert type(entry["filesize"]) is int and type(entry["index"]) is int
    assert job["results"][0]["filename"] == "summary.json"
    for phase in job["phases"].values():
        assert float(phase["started"]) <= float(phase["finished"])
    assert job["terminationDetails"] == {"exitCode": 0, "OOMKilled": False, "reason": "Completed"}

    # Stopping a finished job is harmless: nothing changes.
    assert operator.stop(workflow.job_id) == done
    assert ocean_job_json(operator.job(workflow.job_id) or done) == job
    with pytest.raises(JobNotFound):
        operator.stop(uuid.uuid4().hex)


def test_one_job_per_agreement_stop_and_queue(
    operator: DagsterJobs, make_workflow: Callable[..., Workflow]
) -> None:
    first, second, queued = (make_workflow(agreement(), SLOW_ALGORITHM) for _ in range(3))
    for workflow in (first, second, queued):
        operator.submit(workflow)
    # The environment runs 2 jobs at once: the third waits in Dagster's queue.
    deadline = time.monotonic() + 30
    while operator.current_jobs(ENV) != (2, 1):
        assert time.monotonic() < deadline, operator.current_jobs(ENV)
        time.sleep(0.2)
    waiting = operator.job(queued.job_id)
    assert waiting is not None and waiting.run_status == "QUEUED"
    assert operator.queue_position(waiting) == 1
    assert operator.queue_position(operator.job(first.job_id) or waiting) is None

    # The agreement of an unfinished job takes no second job, and nothing is launched.
    again = make_workflow(first.agreement_id)
    with pytest.raises(JobConflict, match="already has an unfinished compute job") as conflict:
        operator.submit(again)
    assert conflict.value.existing.job_id == first.job_id
    assert operator.job(again.job_id) is None
    assert len(operator.jobs(agreement_id=first.agreement_id)) == 1

    # Stopped while queued: it never ran, so it ends at once as a failure, stopreq 1, with a finish date.
    operator.stop(queued.job_id)
    canceled = wait_for(operator, queued.job_id, lambda r: r.run_ended, timeout=10)
    job = ocean_job_json(canceled)
    assert_ocean_shape(job)
    assert (job["status"], job["stopreq"], job["runStatus"]) == (31, 1, "CANCELED")
    assert isinstance(job["dateFinished"], str) and job["results"] == ""
    assert "stopped on request before it started" in job["statusDetail"]

    # Stopped while the algorithm runs: killed, logs published, Ocean's 70 with stopreq 1.
    running = wait_for(operator, first.job_id, lambda r: ocean_job_json(r)["status"] == 40, timeout=30)
    assert ocean_job_json(running)["dateFinished"] is None
    operator.stop(first.job_id)
    stopped = wait_for(operator, first.job_id, lambda r: r.run_ended, timeout=30)
    job = ocean_job_json(stopped)
    assert_ocean_shape(job)
    assert (job["status"], job["stopreq"], job["runStatus"]) == (70, 1, "CANCELED")
    assert job["terminationDetails"]["reason"] == "Stopped"
    assert isinstance(job["dateFinished"], str)
    assert "algorithmLog" in [entry["type"] for entry in job["results"]]
    # Stopping it again changes nothing; its agreement is free for a new job now.
    assert operator.stop(first.job_id) == stopped
    assert operator.submit(again).job_id == again.job_id
    operator.stop(second.job_id)
    assert (
        ocean_job_json(wait_for(operator, second.job_id, lambda r: r.run_ended, timeout=30))["stopreq"] == 1
    )
    assert wait_for(operator, again.job_id, lambda r: r.run_ended, timeout=30).run_status == "SUCCESS"

    # Dagster cannot terminate a STARTING run: a stop that meets one waits until it can.
    late = make_workflow(agreement(), SLOW_ALGORITHM)
    operator.submit(late)
    wait_for(operator, late.job_id, lambda r: r.run_status != "QUEUED", timeout=10, poll=0.02)
    operator.stop(late.job_id)
    # A stop that lands while configure is setting up leaves the run ended before publish: the stage
    # watchdog then salvages the job (status 60, no dateFinished) until its logs are published.
    job = ocean_job_json(wait_for(operator, late.job_id, lambda r: r.finished, timeout=90))
    assert (job["stopreq"], job["runStatus"]) == (1, "CANCELED")
    assert isinstance(job["dateFinished"], str)
    assert operator.current_jobs(ENV) == (0, 0)


def test_backend_unavailable_on_a_closed_port(
    running_stack: stack.Stack, make_workflow: Callable[..., Workflow], tmp_path: Path
) -> None:
    # Reads come from run storage: a closed webserver port does not stop them, only the writes.
    closed = DagsterJobs(
        f"http://127.0.0.1:{stack._free_port()}/graphql", timeout=2, dagster_home=running_stack.home
    )
    assert closed.job(uuid.uuid4().hex) is None
    assert closed.current_jobs(ENV) == (0, 0)
    with pytest.raises(BackendUnavailable, match="did not answer"):
        closed.submit(make_workflow(agreement()))
    # A server that is not Dagster's GraphQL endpoint is unavailable too, not a crash.
    wrong = DagsterJobs(
        f"{running_stack.webserver_url}/no-graphql-here", timeout=2, dagster_home=running_stack.home
    )
    with pytest.raises(BackendUnavailable, match="launching the job failed"):
        wrong.submit(make_workflow(agreement()))
    # A run storage that does not answer (Postgres on a closed port) is a BackendUnavailable too.
    home = tmp_path / "dagster-home"
    home.mkdir()
    postgres = {
        "username": "postgres",
        "password": "",
        "hostname": "127.0.0.1",
        "port": stack._free_port(),
        "db_name": "nothing_here",
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": postgres}}}))
    down = DagsterJobs(f"{running_stack.webserver_url}/graphql", timeout=2, dagster_home=home)
    with pytest.raises(BackendUnavailable, match="run storage"):
        down.jobs(owner="0x" + "d" * 40)
    with pytest.raises(BackendUnavailable, match="run storage"):
        down.current_jobs(ENV)
    # Without an instance to read (no dagster_home, no DAGSTER_HOME) reads say what to set.
    nowhere = DagsterJobs(f"{running_stack.webserver_url}/graphql")
    if "DAGSTER_HOME" not in os.environ:
        with pytest.raises(BackendUnavailable, match="DAGSTER_HOME"):
            nowhere.job(uuid.uuid4().hex)


def _epoch_now() -> float:
    return datetime.now(UTC).timestamp()


def test_who_stopped_it_a_consumer_over_http_or_an_operator_over_graphql(
    running_stack: stack.Stack, operator: DagsterJobs, make_workflow: Callable[..., Workflow]
) -> None:
    consumer = dev_accounts(10)[2]
    by_consumer, by_operator = (
        make_workflow(agreement(), SLOW_ALGORITHM, owner=consumer.address) for _ in range(2)
    )
    for workflow in (by_consumer, by_operator):
        operator.submit(workflow)
    for workflow in (by_consumer, by_operator):
        wait_for(operator, workflow.job_id, lambda r: ocean_job_json(r)["status"] == 40, timeout=60)
    provider = ProviderClient(running_stack.provider_url)
    before = _epoch_now()
    # The consumer: a signed computeStop to the Provider, which records who and when, then terminates.
    [answer] = provider.stop(consumer, by_consumer.job_id)
    assert answer["jobId"] == by_consumer.job_id
    # An operator: Terminate in the Dagster UI, i.e. GraphQL's terminateRun on the job's run.
    run_id = (operator.job(by_operator.job_id, fresh=True) or pytest.fail("no run")).run_id
    sent = httpx.post(
        f"{running_stack.webserver_url}/graphql",
        json={"query": TERMINATE_MUTATION, "variables": {"runId": run_id}},
        timeout=30,
    )
    assert sent.json()["data"]["terminateRun"]["__typename"] == "TerminateRunSuccess", sent.text
    after = _epoch_now()

    def ended(job_id: str) -> dict:
        deadline = time.monotonic() + 60
        while True:
            [job] = provider.status(consumer.address, job_id)
            if job["dateFinished"] is not None:
                assert job.pop("queuePosition") is None  # the route's own key (consumer_jobs.job_json)
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.3)

    stopped = ended(by_consumer.job_id)
    assert_ocean_shape(stopped)
    assert (stopped["stopreq"], stopped["stoppedBy"]) == (1, "consumer"), stopped
    assert before - 1 <= float(stopped["stoppedAt"]) <= after + 1
    terminated = ended(by_operator.job_id)
    assert_ocean_shape(terminated)
    assert (terminated["stopreq"], terminated["stoppedBy"]) == (1, "operator"), terminated
    assert before - 1 <= float(terminated["stoppedAt"]) <= after + 1
    # What run storage holds: the consumer's address on the one, nothing on the other.
    consumer_run = operator.job(by_consumer.job_id, fresh=True)
    operator_run = operator.job(by_operator.job_id, fresh=True)
    assert consumer_run is not None and operator_run is not None
    assert consumer_run.tags[engine.STOPPED_BY] == consumer.address
    assert not operator_run.tags.get(engine.STOPPED_BY)
    provider.close()
