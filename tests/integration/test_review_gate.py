"""The review gate (issue 15, item 4) on the real sandbox and pod programs: a job of an environment that
requires review stops at 55 with its results held; review_job approves (70, results downloadable) or
rejects (56 with the reason, outputs deleted); an undecided job expires (57); the Provider reads 55 as
a running job and serves nothing meanwhile, and offers no way for a consumer to decide."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from engine_kit import (
    dataset_input,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    run_requested_job,
    serve_origin,
)
from fastapi.testclient import TestClient

from c2d_cli.origin import LocalOrigin
from c2d_core import engine, review
from c2d_core.result_stores import ResultStores
from c2d_core.results import LocalResultStore
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from c2d_defs.expiry import review_expiry
from c2d_defs.jobs.review import review_expiry_job, review_job
from c2d_defs.resources import LocalResultStoreResource
from c2d_defs.stage_watchdog import judge
from provider_api.errors import OceanHTTPError
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.result_files import stream_job_result

pytestmark = pytest.mark.integration

DID = "did:op:" + hashlib.sha256(b"review-dataset").hexdigest()
ENVIRONMENTS = """
environments:
  - id: plain-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxProcesses: 64
    imageMap: [{image: "python:3.11*", aliases: {python: /usr/bin/python3}}]
  - id: review-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxProcesses: 64
    review: {required: true, deadlineSeconds: 3600}
    imageMap: [{image: "python:3.11*", aliases: {python: /usr/bin/python3}}]
  - id: screened-review-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxProcesses: 64
    outputStages:
      - name: leak_filter
        settings: {min_whole_file_bytes: 1}
    review: {required: true, deadlineSeconds: 3600}
    imageMap: [{image: "python:3.11*", aliases: {python: /usr/bin/python3}}]
  - id: hasty-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 10
    maxProcesses: 64
    review: {required: true, deadlineSeconds: 1}
    imageMap: [{image: "python:3.11*", aliases: {python: /usr/bin/python3}}]
"""
ALGORITHM = """
import os
total = sum(int(line) for line in open(os.path.join("/data/inputs", os.listdir("/data/inputs")[0], "0")))
open("/data/outputs/total.txt", "w").write(str(total))
print("summed", total)
"""

# Hands the dataset's file back as an output: the leak filter's business, before any reviewer's.
COPYING = """
import os, shutil
folder = os.path.join("/data/inputs", os.listdir("/data/inputs")[0])
shutil.copy(os.path.join(folder, "0"), "/data/outputs/copy.txt")
print("copied")
"""


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[LocalOrigin]:
    with serve_origin(tmp_path / "origin", {"numbers.txt": "1\n2\n3\n"}) as server:
        yield server


def _workflow(
    home: Path, origin: LocalOrigin, environment: str, job: str, rawcode: str = ALGORITHM
) -> dict[str, Any]:
    return raw_workflow(
        job_id=hashlib.md5(job.encode()).hexdigest(),
        environment=environment,
        inputs=[dataset_input(home, DID, [f"{origin.url}/numbers.txt"])],
        algorithm=python_algorithm(rawcode),
    )


def _record(instance: dg.DagsterInstance, run_id: str) -> JobRecord:
    """The job as the Provider reads it from run storage."""
    record = instance.get_run_record_by_id(run_id)
    assert record is not None
    run = record.dagster_run
    return JobRecord(
        run_id=run.run_id,
        run_status=run.status.value,
        tags=dict(run.tags),
        created=record.create_timestamp.timestamp(),
        ended=record.end_time,
        started=record.start_time,
    )


def _stores(home: Path) -> ResultStores:
    return ResultStores(LocalResultStore(EngineSettings(home=home).resolved_results_dir))


def _review(
    instance: dg.DagsterInstance, job_id: str, decision: str, **config: Any
) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {review.REVIEW_OP: {"config": {"job_id": job_id, "decision": decision, **config}}}}
    return review_job.execute_in_process(
        run_config=run_config,
        instance=instance,
        resources={"result_store": LocalResultStoreResource()},
        raise_on_error=False,
    )


def _held_job(home: Path, origin: LocalOrigin, instance: dg.DagsterInstance, env: str, name: str) -> str:
    workflow = _workflow(home, origin, env, name)
    result = run_compute_job(workflow, instance)
    assert result.success
    return result.run_id


def test_held_job_is_running_to_ocean_and_serves_nothing_until_approved(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run_id = _held_job(c2d_home, origin, instance, "review-env", "approve-me")
    record = _record(instance, run_id)
    job_id = record.job_id
    tags = record.tags
    assert tags[engine.STATUS] == "55" and tags[review.STATE] == "awaiting"
    assert engine.DATE_FINISHED not in tags and engine.RESULTS not in tags and engine.LIVE_LOG not in tags
    held = [entry["filename"] for entry in review.ReviewView(tags).held]
    assert held == ["total.txt", "algorithm.log", "configure.log", "publish.log"]
    results_dir = EngineSettings(home=c2d_home).resolved_results_dir
    assert (results_dir / review.held_key(job_id) / "total.txt").read_text() == "6"
    assert not (results_dir / job_id).exists() or not any((results_dir / job_id).iterdir())

    # To Ocean's clients a running job: no dateFinished; computeResult answers 409.
    job = ocean_job_json(record)
    assert (job["status"], job["statusText"], job["dateFinished"], job["results"]) == (
        55,
        "Awaiting review",
        None,
        "",
    )
    assert not record.finished
    with pytest.raises(OceanHTTPError) as held_error:
        stream_job_result(lambda: _stores(c2d_home), record, 0, None)
    assert held_error.value.status_code == 409 and "review" in str(held_error.value.body)
    # The stage watchdog leaves a held job alone (its run ended on purpose).
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert judge(run, environments=_environments(), settings=EngineSettings(home=c2d_home), now=1e12) is None

    refused = _review(instance, job_id, "approve", reviewer="")
    assert not refused.success
    approved = _review(instance, job_id, "approve", reviewer="alice@operator", reason="aggregate only")
    assert approved.success
    record = _record(instance, run_id)
    tags = record.tags
    assert tags[engine.STATUS] == "70" and engine.DATE_FINISHED in tags
    assert tags[review.STATE] == "approved" and tags[review.DECIDED_BY] == "alice@operator"
    assert float(tags[review.DECIDED_AT]) >= float(tags[review.REQUESTED_AT])
    assert tags[review.DECISION_RUN] == approved.run_id
    job = ocean_job_json(record)
    assert job["status"] == 70 and job["dateFinished"] is not None
    names = [entry["filename"] for entry in job["results"]]
    assert names == ["total.txt", "algorithm.log", "configure.log", "publish.log", "attestation.json"]
    response = stream_job_result(lambda: _stores(c2d_home), record, 0, None)
    body = b"".join(_chunks(response))
    assert body == b"6"
    assert not (results_dir / review.held_key(job_id)).exists()

    again = _review(instance, job_id, "reject", reviewer="bob", reason="too late")
    assert not again.success
    review_run = instance.get_run_by_id(again.run_id)
    assert review_run is not None and "already decided" in review_run.tags[review.REVIEW_REFUSED]
    assert _record(instance, run_id).tags[engine.STATUS] == "70"


def test_rejected_job_fails_with_the_reason_and_its_outputs_are_gone(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run_id = _held_job(c2d_home, origin, instance, "review-env", "reject-me")
    job_id = _record(instance, run_id).job_id
    assert not _review(instance, job_id, "reject", reviewer="carol").success  # no reason: refused
    assert _record(instance, run_id).tags[review.STATE] == "awaiting"
    assert _review(instance, job_id, "reject", reviewer="carol", reason="copies rows of the input").success
    record = _record(instance, run_id)
    job = ocean_job_json(record)
    assert job["status"] == int(JobStatus.REVIEW_REJECTED) and job["dateFinished"] is not None
    assert "copies rows of the input" in job["statusDetail"]
    # The engine's logs come back; the algorithm's log is the algorithm's output too, and stays held
    # back unless the reviewer releases it.
    assert [entry["type"] for entry in job["results"]] == ["configurationLog", "publishLog"]
    results_dir = EngineSettings(home=c2d_home).resolved_results_dir
    assert not (results_dir / job_id / "total.txt").exists()
    assert not (results_dir / job_id / "algorithm.log").exists()
    assert not (results_dir / review.held_key(job_id)).exists()
    assert (
        record.tags[review.DECIDED_BY] == "carol" and record.tags[review.REASON] == "copies rows of the input"
    )


def test_a_reviewer_may_release_the_algorithm_log_of_a_rejected_job(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run_id = _held_job(c2d_home, origin, instance, "review-env", "reject-but-tell")
    job_id = _record(instance, run_id).job_id
    decided = _review(
        instance, job_id, "reject", reviewer="carol", reason="too fine-grained", release_algorithm_log=True
    )
    assert decided.success
    job = ocean_job_json(_record(instance, run_id))
    assert [entry["type"] for entry in job["results"]] == ["algorithmLog", "configurationLog", "publishLog"]
    assert not (EngineSettings(home=c2d_home).resolved_results_dir / job_id / "total.txt").exists()


def test_an_undecided_job_expires_at_its_deadline(c2d_home: Path, origin: LocalOrigin) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run_id = _held_job(c2d_home, origin, instance, "hasty-env", "forget-me")
    tags = _record(instance, run_id).tags
    deadline = float(tags[review.DEADLINE])
    assert deadline - float(tags[review.REQUESTED_AT]) == pytest.approx(1, abs=0.01)
    import time

    while time.time() < deadline:  # wait out the one second; the assertions are on what follows
        time.sleep(0.1)
    request = review_expiry(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.RunRequest), request
    ran = run_requested_job(
        request, review_expiry_job, instance, {"result_store": LocalResultStoreResource()}
    )
    assert ran.success
    record = _record(instance, run_id)
    job = ocean_job_json(record)
    assert job["status"] == int(JobStatus.REVIEW_EXPIRED) and job["statusText"] == "Review deadline passed"
    assert job["dateFinished"] is not None and record.tags[review.STATE] == "expired"
    assert all(entry["type"] != "output" for entry in job["results"])
    # Too late for an operator now.
    assert not _review(instance, record.job_id, "approve", reviewer="dave").success


def test_an_environment_without_review_publishes_as_before(c2d_home: Path, origin: LocalOrigin) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run_id = _held_job(c2d_home, origin, instance, "plain-env", "no-gate")
    record = _record(instance, run_id)
    assert record.tags[engine.STATUS] == "70" and review.STATE not in record.tags
    assert ocean_job_json(record)["results"][0]["type"] == "output"
    refused = _review(instance, record.job_id, "approve", reviewer="erin")
    assert not refused.success
    review_run = instance.get_run_by_id(refused.run_id)
    assert review_run is not None and "not held for review" in review_run.tags[review.REVIEW_REFUSED]


def test_output_stages_run_before_the_gate_and_a_refused_job_is_never_held(
    c2d_home: Path, origin: LocalOrigin
) -> None:
    """An environment with both outputStages and review: the filter judges first. What it refuses
    ends 61 at once (nothing for a reviewer: the outputs are withheld, never stored); what it accepts
    waits at 55 and is released only by a decision."""
    instance = dg.DagsterInstance.ephemeral()
    results_dir = EngineSettings(home=c2d_home).resolved_results_dir

    copier = _workflow(c2d_home, origin, "screened-review-env", "copy-then-review", rawcode=COPYING)
    refused = run_compute_job(copier, instance)
    record = _record(instance, refused.run_id)
    statuses = _statuses(instance, refused.run_id)
    assert int(JobStatus.FILTERING_RESULTS) in statuses and int(JobStatus.AWAITING_REVIEW) not in statuses
    assert review.STATE not in record.tags and review.DEADLINE not in record.tags
    job = ocean_job_json(record)
    assert (job["status"], job["dateFinished"] is not None) == (61, True), job
    assert "leak_filter" in job["statusDetail"]
    assert "filter" in job["phases"] and all(entry["type"] != "output" for entry in job["results"])
    assert not (results_dir / review.held_key(record.job_id)).exists()
    assert not (results_dir / record.job_id / "copy.txt").exists()
    not_held = _review(instance, record.job_id, "approve", reviewer="frank")
    assert not not_held.success

    summer = _workflow(c2d_home, origin, "screened-review-env", "sum-then-review")
    accepted = run_compute_job(summer, instance)
    assert accepted.success
    record = _record(instance, accepted.run_id)
    statuses = _statuses(instance, accepted.run_id)
    assert statuses.index(int(JobStatus.FILTERING_RESULTS)) < statuses.index(int(JobStatus.AWAITING_REVIEW))
    job = ocean_job_json(record)
    assert (job["status"], job["dateFinished"], job["results"]) == (55, None, "")
    assert job["phases"]["filter"]["finished"] is not None
    assert (results_dir / review.held_key(record.job_id) / "total.txt").read_text() == "6"
    assert _review(instance, record.job_id, "approve", reviewer="frank").success
    record = _record(instance, accepted.run_id)
    assert ocean_job_json(record)["status"] == 70
    body = b"".join(_chunks(stream_job_result(lambda: _stores(c2d_home), record, 0, None)))
    assert body == b"6"


def _statuses(instance: dg.DagsterInstance, run_id: str) -> list[int]:
    """Every status the job's run recorded, in order (the engine logs each change with its code)."""
    import re

    said = [
        event.message
        for event in instance.all_logs(run_id)
        if event.message and event.message.startswith("status ")
    ]
    return [int(match.group(1)) for text in said if (match := re.match(r"status (\d+)", text))]


def test_the_provider_has_no_way_for_a_consumer_to_decide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eth_account import Account

    from c2d_core.ocean.signing import sign_request
    from provider_api.main import create_app
    from provider_api.settings import ProviderSettings

    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    settings = ProviderSettings(nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}")
    consumer = Account.create()
    job_id = "a" * 32
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert not [path for path in paths if "review" in path.lower() or "approv" in path.lower()]
        signature = sign_request(consumer, consumer.address + job_id, "1")
        body = {"consumerAddress": consumer.address, "jobId": job_id, "nonce": "1", "signature": signature}
        for method, path in (
            ("POST", "/api/services/review"),
            ("POST", "/api/services/compute/review"),
            ("POST", "/api/services/computeReview"),
            ("PUT", "/api/services/compute/approve"),
        ):
            answer = client.request(method, path, json={**body, "decision": "approve"})
            assert answer.status_code in (404, 405), (method, path, answer.status_code)


def _environments() -> Any:
    from c2d_core.environments import Environments

    return Environments.load(EngineSettings().environments_file)


def _chunks(response: Any) -> list[bytes]:
    import asyncio

    async def collect() -> list[bytes]:
        return [chunk async for chunk in response.body_iterator]

    return asyncio.run(collect())
