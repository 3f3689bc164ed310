"""computeStreamableLogs over HTTP (ASGI TestClient) and the stream it answers with.

Dagster's GraphQL address is a closed loopback port: a request that got past the checks to the job
lookup answers 503, so a 400 proves the request was refused before it. The stream is read from a real
local result store, its job reads (`refresh`) and waits (`sleep`) injected. A running job end to end:
tests/e2e/test_live_logs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from c2d_core import engine
from c2d_core.live_logs import LIVE_LOG_NAME
from c2d_core.ocean.signing import compute_streamable_logs_message, sign_request
from c2d_core.result_stores import ResultStores
from c2d_core.results import LocalResultStore
from provider_api.jobs import JobRecord
from provider_api.live_logs import LiveLogStream
from provider_api.main import create_app
from provider_api.settings import ProviderSettings

ROUTE = "/api/services/computeStreamableLogs"
CONSUMER = Account.from_key("0x" + "c4" * 32)
JOB_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    settings = ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}", graphql_url="http://127.0.0.1:9/graphql"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def signed(nonce: int, job_id: str = JOB_ID) -> dict[str, str]:
    message = compute_streamable_logs_message(CONSUMER.address, job_id)
    return {
        "consumerAddress": CONSUMER.address,
        "jobId": job_id,
        "nonce": str(nonce),
        "signature": sign_request(CONSUMER, message, nonce),
    }


def test_discovery_lists_it_under_ocean_nodes_name(client: TestClient) -> None:
    endpoints = client.get("/").json()["serviceEndpoints"]
    assert endpoints["computeStreamableLogs"] == ["GET", ROUTE]


def test_every_missing_field_is_named_at_once_before_any_lookup(client: TestClient) -> None:
    answer = client.get(ROUTE)
    assert answer.status_code == 400
    body = answer.json()
    assert body["success"] is False and body["message"] == "Validation error"
    assert set(body["errors"]) == {"consumerAddress", "jobId", "nonce", "signature"}


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "ABC", "0" * 33, "/tmp/x"])
def test_a_job_id_that_is_not_one_is_refused(client: TestClient, job_id: str) -> None:
    answer = client.get(ROUTE, params={**signed(5), "jobId": job_id})
    assert answer.status_code == 400 and "jobId" in answer.json()["errors"]


def test_a_bad_signature_is_refused_and_a_replayed_nonce_too(client: TestClient) -> None:
    forged = {**signed(5), "signature": sign_request(Account.create(), CONSUMER.address + JOB_ID, 5)}
    answer = client.get(ROUTE, params=forged)
    assert answer.status_code == 400 and "signature" in answer.json()["errors"]
    # Signed over another job: the signature does not recover to the consumer.
    answer = client.get(ROUTE, params={**signed(5, job_id="f" * 32), "jobId": JOB_ID})
    assert answer.status_code == 400 and "signature" in answer.json()["errors"]
    good = signed(6)
    assert client.get(ROUTE, params=good).status_code == 503  # past the checks, at the (closed) backend
    replayed = client.get(ROUTE, params=good)
    assert replayed.status_code == 400 and "nonce" in str(replayed.json()["errors"]["signature"])


def record(finished: bool, live: bool = True) -> JobRecord:
    tags = {engine.JOB_ID: JOB_ID, engine.OWNER: CONSUMER.address}
    if live:
        tags[engine.LIVE_LOG] = f"{JOB_ID}/{LIVE_LOG_NAME}"
    if finished:
        tags[engine.DATE_FINISHED] = "1700000000.000"
    return JobRecord(run_id="r", run_status="SUCCESS" if finished else "STARTED", tags=tags)


def test_the_stream_sends_what_was_added_and_ends_with_the_job(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path / "results")
    stores = ResultStores(local=store)
    live = tmp_path / "results" / JOB_ID / LIVE_LOG_NAME
    live.parent.mkdir(parents=True)
    # What the run worker writes between two polls, and how the job looks at the next one.
    steps = iter(
        [
            (b"one\n", record(False)),
            (b"one\ntwo\n", record(False)),
            (b"one\ntwo\nthree\n", record(True)),
        ]
    )
    state: dict[str, JobRecord] = {}

    def sleep(_seconds: float) -> None:
        content, state["record"] = next(steps)
        live.write_bytes(content)

    stream = LiveLogStream(record(False, live=False), lambda: state["record"], lambda: stores, sleep=sleep)
    assert list(stream) == [b"one\n", b"two\n", b"three\n"]


def test_a_finished_job_without_a_live_log_ends_at_once(tmp_path: Path) -> None:
    stores = ResultStores(local=LocalResultStore(tmp_path / "results"))
    slept: list[float] = []
    stream = LiveLogStream(record(True), lambda: None, lambda: stores, sleep=slept.append)
    assert list(stream) == [] and slept == []
