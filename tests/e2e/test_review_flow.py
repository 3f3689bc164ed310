"""The review gate end to end on the embedded stack (issue 15, item 4), as a consumer and an operator use it.

A consumer orders and starts a job (the real chain order and the Provider's computeStart) in the stack's
environment that requires review; Ocean-style polling shows a running job at 55 with no dateFinished,
and computeResult refuses the held results in Ocean's error shape. The operator works with
`c2d admin review list|show|download|approve|reject` as real subprocesses (Dagster's GraphQL API and the
result store, no consumer key): approved, the consumer downloads the results (70); rejected, the job
ends 56 with the reason in statusDetail, the outputs are never downloadable, the engine's logs are. A
review_job launched from the launchpad path (GraphQL launchRun, as the Dagster UI sends it) for a job
not awaiting review is refused with a sentence and changes nothing.

The operator commands see only the tags GraphQL shows (most of a job's state is hidden under
`.dagster/`), so the module checks what they make of them: the outcome approval gives, read from a
job whose algorithm was killed over its disk limit (42, not 70), and that approval ends it so; a
refused launchpad copy of a held run (it carries the job's visible tags, its review state included) is
neither listed as the job a second time nor taken for it; and a decision on a job that has ended is
refused from the visible tags alone.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from c2d_cli.consumer import (
    Target,
    download_results,
    initialize,
    order_and_start,
    place_orders,
    start_job,
    wait_for_status,
)
from c2d_cli.publisher import SAMPLE_CONTAINER, mint_to
from c2d_core import engine, review
from c2d_core.chain import dev_account

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

C2D = str(Path(sys.executable).parent / "c2d")
CONSUMER = 8  # an anvil account no other module orders with: its job list is this module's
HELD = ["summary.json", "algorithm.log", "configure.log", "publish.log"]

_LAUNCH = """
mutation LaunchRunMutation($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
_VISIBLE = """
query C2dTestRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status creationTime runConfig tags { key value } } }
  }
}
"""
# A raw algorithm that is killed over its environment's disk limit (1 GB): two sparse files under
# $LOGS, which the disk watcher counts at their size but which take no space and are never published.
# The job's status is then 42, and it still reaches review: its algorithm ran, its log is held.
OVER_DISK = """\
import os, time
for name in ("pad-a", "pad-b"):
    with open(os.path.join(os.environ["LOGS"], name), "wb") as handle:
        handle.truncate(600 * 1024 * 1024)
print("padded", flush=True)
time.sleep(120)
"""
_RUN = """
query RunRoot($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status
      tags { key value }
      eventConnection {
        events {
          __typename
          ... on ExecutionStepFailureEvent { failureMetadata { description } }
        }
      }
    }
  }
}
"""


def operator(stack: Any, *args: str) -> subprocess.CompletedProcess:
    """`c2d admin review ...` as an operator runs it: the stack's home, no consumer key or C2D_* setting."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.pop("COLUMNS", None)
    env["C2D_HOME"] = stack.running.home
    return subprocess.run(
        [C2D, "admin", "review", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def held_job(s: Any, rawcode: str | None = None) -> dict[str, Any]:
    """A job of the review environment (the published algorithm, or `rawcode` on the dataset that
    allows raw algorithms), polled as Ocean's clients poll until it waits at 55."""
    consumer = dev_account(CONSUMER)
    if rawcode is None:
        job = order_and_start(s.chain, consumer, s.provider, s.dataset, s.algorithm, s.review_env)
    else:
        meta = {"rawcode": rawcode, "container": SAMPLE_CONTAINER}
        datasets = [Target.of(s.raw_dataset, "dataset")]
        quoted = initialize(s.provider, s.chain, consumer.address, s.review_env, datasets, None, meta=meta)
        orders = place_orders(s.chain, consumer, s.review_env, quoted, lambda _text: None)
        job = start_job(s.provider, consumer, s.review_env, datasets, None, orders, meta=meta)
    assert job["status"] == 1, job
    return wait_for_status(
        s.provider,
        consumer.address,
        job["jobId"],
        until=lambda current: current["status"] == 55 or bool(current.get("dateFinished")),
    )


@pytest.fixture(scope="module")
def s(ocean_stack: Any) -> Any:
    for asset in (ocean_stack.dataset, ocean_stack.algorithm, ocean_stack.raw_dataset):
        mint_to(ocean_stack.chain, ocean_stack.publisher, asset, dev_account(CONSUMER).address, 10)
    return ocean_stack


def graphql(s: Any, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{s.running.webserver_url}/graphql", json={"query": query, "variables": variables}, timeout=30
    )
    answer.raise_for_status()
    body = answer.json()
    assert not body.get("errors"), body
    return dict(body["data"])


def visible_runs(s: Any, job_id: str) -> list[dict[str, Any]]:
    """The compute runs of `job_id` as the webserver's GraphQL API shows them (visible tags only)."""
    run_filter = {"pipelineName": engine.JOB_NAME, "tags": [{"key": engine.JOB_ID, "value": job_id}]}
    runs = graphql(s, _VISIBLE, {"filter": run_filter})["runsOrError"]["results"]
    return [
        {**run, "tags": {item["key"]: item["value"] for item in run["tags"]}}
        for run in sorted(runs, key=lambda run: run["creationTime"])
    ]


def assert_held_at_55(s: Any, job: dict[str, Any]) -> None:
    consumer = dev_account(CONSUMER)
    # What an Ocean client reads: a running job, nothing to fetch yet.
    assert (job["status"], job["statusText"], job["dateFinished"], job["results"]) == (
        55,
        "Awaiting review",
        None,
        "",
    ), job
    listed = httpx.get(
        f"{s.provider.url}/api/services/compute",
        params={"consumerAddress": consumer.address, "jobId": job["jobId"]},
        timeout=30,
    ).json()
    assert [(item["status"], item["dateFinished"]) for item in listed] == [(55, None)]
    for index in (0, 1):
        refused = s.provider.result(consumer, job["jobId"], index)
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert list(body) == ["error"] and isinstance(body["error"], str)
        assert "held for the operator's review" in body["error"]


def test_operator_reviews_downloads_and_approves_then_the_consumer_downloads(s: Any, tmp_path: Path) -> None:
    consumer = dev_account(CONSUMER)
    job = held_job(s)
    job_id = job["jobId"]
    assert_held_at_55(s, job)

    # The queue, read through the webserver the --dagster-url names.
    listed = operator(s, "list", "--dagster-url", s.running.webserver_url, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["jobId"]: row for row in json.loads(listed.stdout)}
    assert rows[job_id]["state"] == "awaiting" and rows[job_id]["status"] == 55
    assert rows[job_id]["owner"] == consumer.address
    assert rows[job_id]["environment"] == s.review_env["id"]
    assert rows[job_id]["deadline"] - rows[job_id]["requestedAt"] == pytest.approx(3600, abs=0.01)
    table = operator(s, "list")
    assert table.returncode == 0 and job_id in table.stdout, table.stdout + table.stderr

    shown = operator(s, "show", job_id, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert [entry["filename"] for entry in document["held"]] == HELD
    assert document["outcomeIfApproved"] == {"status": 70, "statusText": "Job finished", "detail": ""}
    # Names, sizes and digests only: where the store keeps them and where the data came from stay out.
    assert "location" not in shown.stdout and s.origin_url.split("//")[1] not in shown.stdout

    # The launchpad's copy of the held run (the UI copies its run config and the tags it shows, the
    # review state among them): refused by the engine, and still not the job for the operator.
    [held_run] = visible_runs(s, job_id)
    assert held_run["runId"] == document["runId"]
    copy_params = {
        "selector": {
            "repositoryLocationName": engine.LOCATION,
            "repositoryName": engine.REPOSITORY,
            "jobName": engine.JOB_NAME,
        },
        "runConfigData": held_run["runConfig"],
        "executionMetadata": {
            "tags": [{"key": k, "value": v} for k, v in held_run["tags"].items() if k.startswith("c2d/")]
        },
    }
    copied = graphql(s, _LAUNCH, {"executionParams": copy_params})["launchRun"]
    assert copied["__typename"] == "LaunchRunSuccess", copied
    assert ended_run(s, copied["run"]["runId"])["status"] == "FAILURE"
    [_, copy] = visible_runs(s, job_id)
    assert copy["runId"] == copied["run"]["runId"]
    assert copy["tags"][review.STATE] == "awaiting" and copy["tags"][engine.OUTCOME] == "refused"
    # What the webserver shows of the copy is all decision_problem gets: it sees a run that has ended.
    assert review.decision_problem(copy["tags"], "approve", time.time()) == (
        f"job {job_id} has ended without a decision: it is no longer awaiting review"
    )
    queue = operator(s, "list", "-o", "json")
    assert queue.returncode == 0, queue.stderr
    assert [row["runId"] for row in json.loads(queue.stdout) if row["jobId"] == job_id] == [held_run["runId"]]
    assert json.loads(operator(s, "show", job_id, "-o", "json").stdout)["runId"] == held_run["runId"]

    folder = tmp_path / "review"
    fetched = operator(s, "download", job_id, "--dir", str(folder))
    assert fetched.returncode == 0, fetched.stderr
    for entry in document["held"]:
        content = (folder / job_id / entry["filename"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == entry["sha256"] and len(content) == entry["filesize"]
    reviewed = json.loads((folder / job_id / "summary.json").read_text())
    assert reviewed["cities"]["Lisbon"]["count"] == 4

    approved = operator(s, "approve", job_id, "--reviewer", "alice@operator", "-o", "json")
    assert approved.returncode == 0, approved.stderr
    decision = json.loads(approved.stdout)
    assert decision["runStatus"] == "SUCCESS" and decision["refused"] is None
    assert (decision["job"]["state"], decision["job"]["status"]) == ("approved", 70)
    assert decision["job"]["decidedBy"] == "alice@operator"

    final = wait_for_status(s.provider, consumer.address, job_id)
    assert final["status"] == 70 and final["dateFinished"] is not None, final
    assert [entry["type"] for entry in final["results"]] == [
        "output",
        "algorithmLog",
        "configurationLog",
        "publishLog",
        "attestation",
    ]
    saved = download_results(s.provider, consumer, final, tmp_path / "consumer")
    assert (tmp_path / "consumer" / "summary.json").read_bytes() == (
        folder / job_id / "summary.json"
    ).read_bytes()
    assert len(saved) == 5

    # The Dagster UI's launchpad sends launchRun with the op config only (no tags): on a job already
    # decided the review run refuses, says why, and the job stays as it was.
    params = {
        "selector": {
            "repositoryLocationName": engine.LOCATION,
            "repositoryName": engine.REPOSITORY,
            "jobName": review.REVIEW_JOB_NAME,
        },
        "runConfigData": {
            "ops": {
                review.REVIEW_OP: {
                    "config": {"job_id": job_id, "decision": "reject", "reviewer": "bob", "reason": "late"}
                }
            }
        },
        "mode": "default",
    }
    launched = graphql(s, _LAUNCH, {"executionParams": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = ended_run(s, launched["run"]["runId"])
    tags = {item["key"]: item["value"] for item in run["tags"]}
    assert run["status"] == "FAILURE"
    assert tags[review.REVIEW_REFUSED] == f"job {job_id} was already decided: approved by alice@operator"
    failures = [
        event["failureMetadata"]["description"]
        for event in run["eventConnection"]["events"]
        if event["__typename"] == "ExecutionStepFailureEvent"
    ]
    assert failures == [f"Review refused: {tags[review.REVIEW_REFUSED]}"]
    after = s.provider.status(consumer.address, job_id)[0]
    assert (after["status"], after["dateFinished"]) == (70, final["dateFinished"])
    again = operator(s, "show", job_id, "-o", "json")
    assert json.loads(again.stdout)["decidedBy"] == "alice@operator"
    # The finish date is hidden from GraphQL; its visible twin, the outcome, is enough for
    # decision_problem to see the job has ended, whatever the review state says.
    finished = visible_runs(s, job_id)[0]["tags"]
    assert engine.DATE_FINISHED not in finished and finished[engine.OUTCOME] == "succeeded"
    assert review.decision_problem({**finished, review.STATE: "awaiting"}, "reject", time.time()) == (
        f"job {job_id} has ended without a decision: it is no longer awaiting review"
    )


def test_show_reports_the_outcome_approval_gives_and_approval_ends_the_job_so(s: Any, tmp_path: Path) -> None:
    consumer = dev_account(CONSUMER)
    job = held_job(s, OVER_DISK)
    job_id = job["jobId"]
    assert (job["status"], job["dateFinished"]) == (55, None), job

    shown = operator(s, "show", job_id, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    outcome = document["outcomeIfApproved"]
    assert (outcome["status"], outcome["statusText"]) == (42, "Error: disk quota exceeded"), outcome
    assert "over its disk limit" in outcome["detail"], outcome
    # Held: the algorithm's log and the engine's (it wrote no output; the pads under $LOGS are not stored).
    assert [entry["filename"] for entry in document["held"]] == HELD[1:]
    assert document["note"] is None
    table = operator(s, "show", job_id)
    assert table.returncode == 0, table.stderr
    assert "if approved 42 Error: disk quota exceeded: " in " ".join(table.stdout.split())

    # Without the result store the held files cannot be listed (their copy on the run is hidden from
    # the webserver): said, and the outcome still shown.
    env = {key: value for key, value in os.environ.items() if not key.startswith("C2D_")}
    env.pop("COLUMNS", None)
    env["C2D_RESULTS_DIR"] = str(tmp_path / "another-store")
    blind = subprocess.run(
        [C2D, "admin", "review", "show", job_id, "--dagster-url", s.running.webserver_url, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert blind.returncode == 0, blind.stderr
    without_store = json.loads(blind.stdout)
    assert without_store["held"] == [] and without_store["outcomeIfApproved"] == outcome
    assert f"job {job_id} holds no results for review" in without_store["note"]

    approved = operator(s, "approve", job_id, "--reviewer", "dave@operator", "-o", "json")
    assert approved.returncode == 0, approved.stderr
    assert (json.loads(approved.stdout)["job"]["status"]) == 42
    final = wait_for_status(s.provider, consumer.address, job_id)
    assert (final["status"], final["statusText"]) == (42, "Error: disk quota exceeded"), final
    assert final["dateFinished"] is not None and outcome["detail"] in final["statusDetail"]


def test_operator_rejects_and_the_consumer_gets_the_reason_and_only_the_logs(s: Any, tmp_path: Path) -> None:
    consumer = dev_account(CONSUMER)
    job = held_job(s)
    job_id = job["jobId"]
    assert_held_at_55(s, job)

    no_reason = operator(s, "reject", job_id)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    reason = "the summary names individual stations"
    rejected = operator(s, "reject", job_id, "--reason", reason, "--reviewer", "carol@operator")
    assert rejected.returncode == 0, rejected.stderr
    assert f"job {job_id}: rejected by carol@operator; status 56" in rejected.stdout

    final = wait_for_status(s.provider, consumer.address, job_id)
    assert (final["status"], final["statusText"]) == (56, "Results rejected by review"), final
    assert final["dateFinished"] is not None
    assert reason in final["statusDetail"] and "outputs were deleted" in final["statusDetail"]
    # The engine's logs; the algorithm's log is held back with the outputs (--release-algorithm-log).
    assert [entry["type"] for entry in final["results"]] == ["configurationLog", "publishLog"]
    saved = download_results(s.provider, consumer, final, tmp_path / "consumer")
    assert sorted(path.path.name for path in saved) == ["configure.log", "publish.log"]
    beyond = s.provider.result(consumer, job_id, len(final["results"]))
    assert beyond.status_code == 404, beyond.text

    # The held copy is gone: nothing left for the operator either, said in a sentence.
    gone = operator(s, "download", job_id, "--dir", str(tmp_path / "late"))
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert f"job {job_id} holds no results for review" in gone.stderr
    twice = operator(s, "approve", job_id)
    assert twice.returncode == 1 and "Traceback" not in twice.stderr
    assert f"job {job_id} was already decided: rejected by carol@operator" in twice.stderr
    shown = json.loads(operator(s, "show", job_id, "-o", "json").stdout)
    assert (shown["state"], shown["reason"], shown["held"]) == ("rejected", reason, [])


def test_operator_commands_say_what_is_wrong(s: Any) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    for args in (("show", unknown), ("approve", unknown)):
        answer = operator(s, *args)
        assert answer.returncode == 1 and "Traceback" not in answer.stderr, answer.stderr
        assert (
            f"no compute job {unknown} on the Dagster webserver at {s.running.webserver_url}" in answer.stderr
        )
    closed = operator(s, "list", "--dagster-url", "http://127.0.0.1:9")
    assert closed.returncode == 1 and "Traceback" not in closed.stderr
    assert "cannot reach the Dagster webserver at http://127.0.0.1:9" in closed.stderr
    assert "--dagster-url" in closed.stderr and "C2D_DAGSTER_URL" in closed.stderr
    # The Provider is not the webserver: told so, not a JSON error.
    provider = operator(s, "list", "--dagster-url", s.provider.url)
    assert provider.returncode == 1 and "not a Dagster webserver's GraphQL API" in provider.stderr


def ended_run(s: Any, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        run = graphql(s, _RUN, {"runId": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") or time.monotonic() > deadline:
            return dict(run)
        time.sleep(0.3)
