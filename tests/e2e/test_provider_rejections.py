"""Every bad input the Provider must refuse, against the real stack over HTTP (anvil with the Ocean
contracts, Dagster, the Provider): the exact status, Ocean's error shape, and that nothing started.

Error shapes (reference §1): a field rule → 400 `{"message": "Validation error", "errors": {...}}`;
a business rule → 400 `{"error": "text"}` or `{"error": {resource: code}}`; another consumer's job or
result → 404 `{"error": ...}`; 503 only when a backend fails.

Chain state only moves forward here (no snapshots: the Provider and Dagster share the chain), so each
test pays for its own fresh orders, and the one test that moves chain time (`evm_increaseTime`) runs
last with a small jump; every other fee is valid for an hour of chain time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import to_checksum_address

from c2d_cli.consumer import wait_for_status
from c2d_cli.publisher import SAMPLE_CONTAINER, PublishedAsset, mint_to, publish_asset
from c2d_core import engine
from c2d_core.ocean.signing import sign_text as sign

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SERVICES = "/api/services"
RAW_CODE = """\
import json, os
inputs, outputs = os.environ.get("INPUTS", "/data/inputs"), os.environ.get("OUTPUTS", "/data/outputs")
rows = 0
for did in json.loads(os.environ["DIDS"]):
    for name in os.listdir(os.path.join(inputs, did)):
        with open(os.path.join(inputs, did, name)) as handle:
            rows += sum(1 for _ in handle) - 1
with open(os.path.join(outputs, "rows.json"), "w") as out:
    json.dump({"rows": rows}, out)
print("counted", rows, "rows")
"""


# --- HTTP, GraphQL and chain helpers -----------------------------------------------------------------


def http(s: Any, method: str, route: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{s.provider.url}{SERVICES}/{route}", timeout=60, **kwargs)


def graphql(s: Any, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(
        f"{s.running.webserver_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
    ).json()
    assert not answer.get("errors"), answer
    return dict(answer["data"])


_RUNS = """
query($filter: RunsFilter!) {
  runsOrError(filter: $filter) { __typename ... on Runs { results { runId tags { key value } } } }
}
"""


def runs_tagged(s: Any, key: str, value: str) -> list[dict[str, Any]]:
    data = graphql(s, _RUNS, {"filter": {"tags": [{"key": key, "value": value}]}})
    assert data["runsOrError"]["__typename"] == "Runs", data
    return list(data["runsOrError"]["results"])


def run_id_of(s: Any, job_id: str) -> str:
    runs = runs_tagged(s, engine.JOB_ID, job_id)
    assert len(runs) == 1, runs
    return str(runs[0]["runId"])


@contextmanager
def nothing_started(s: Any, consumer: Any, *agreements: str) -> Iterator[None]:
    """No run appears for `consumer` (its owner tag) or any of `agreements` inside the block."""
    owner = to_checksum_address(consumer.address)
    before = len(runs_tagged(s, engine.OWNER, owner))
    for agreement in agreements:
        assert runs_tagged(s, engine.AGREEMENT_ID, agreement) == []
    yield
    assert len(runs_tagged(s, engine.OWNER, owner)) == before
    for agreement in agreements:
        assert runs_tagged(s, engine.AGREEMENT_ID, agreement) == []


def quote(
    s: Any,
    consumer: Any,
    dataset: PublishedAsset,
    algorithm: PublishedAsset | dict[str, Any],
    env_id: str,
    valid_for: int = 3600,
) -> dict[str, Any]:
    algorithm_ref = (
        algorithm
        if isinstance(algorithm, dict)
        else {"documentId": algorithm.did, "serviceId": algorithm.service_id}
    )
    return s.provider.initialize_compute(
        [{"documentId": dataset.did, "serviceId": dataset.service_id}],
        algorithm_ref,
        env_id,
        s.chain.block_timestamp() + valid_for,
        consumer.address,
    )


def pay(s: Any, payer: Any, asset: PublishedAsset, fee: dict[str, Any], service_index: int = 0) -> str:
    """startOrder as Ocean's compute clients do it: the environment's address as consumer."""
    from c2d_core.fees import ProviderFee, start_order

    return start_order(
        s.chain,
        payer,
        asset.datatoken,
        s.env["consumerAddress"],
        service_index,
        ProviderFee.from_wire(fee),
    )


@dataclass
class Orders:
    dataset_tx: str
    algorithm_tx: str | None
    quote: dict[str, Any]


def fresh_orders(
    s: Any,
    consumer: Any,
    dataset: PublishedAsset | None = None,
    algorithm: PublishedAsset | dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    valid_for: int = 3600,
) -> Orders:
    """A quote and new startOrders (never a reuse) for the dataset and, if published, the algorithm."""
    dataset = dataset or s.dataset
    algorithm = algorithm or s.algorithm
    answer = quote(s, consumer, dataset, algorithm, (env or s.env)["id"], valid_for)
    dataset_tx = pay(s, consumer, dataset, answer["datasets"][0]["providerFee"])
    algorithm_tx = None
    if isinstance(algorithm, PublishedAsset):
        algorithm_tx = pay(s, consumer, algorithm, answer["algorithm"]["providerFee"])
    return Orders(dataset_tx, algorithm_tx, answer)


def refs(
    dataset: PublishedAsset, dataset_tx: str | None, algorithm: PublishedAsset, algorithm_tx: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"documentId": dataset.did, "serviceId": dataset.service_id, "transferTxId": dataset_tx},
        {"documentId": algorithm.did, "serviceId": algorithm.service_id, "transferTxId": algorithm_tx},
    )


def start_body(
    s: Any,
    account: Any,
    dataset_ref: dict[str, Any],
    algorithm_ref: dict[str, Any],
    env_id: str | None = None,
    *,
    nonce: int | None = None,
    signer: Any = None,
) -> dict[str, Any]:
    """A computeStart body signed as Ocean's clients sign it (by `signer`, default the consumer)."""
    if nonce is None:
        nonce = s.provider.nonce(account.address) + 1
    message = account.address + dataset_ref["documentId"] + str(nonce)
    return {
        "consumerAddress": account.address,
        "signature": sign(signer or account, message),
        "nonce": nonce,
        "environment": env_id or s.env["id"],
        "dataset": dataset_ref,
        "algorithm": algorithm_ref,
        "additionalInputs": [],
    }


def start(s: Any, body: dict[str, Any]) -> httpx.Response:
    return http(s, "POST", "compute", json=body)


def signed_job_params(
    s: Any, account: Any, job_id: str, extra: str, nonce: int | None = None
) -> dict[str, str]:
    nonce = s.provider.nonce(account.address) + 1 if nonce is None else nonce
    return {
        "consumerAddress": account.address,
        "jobId": job_id,
        "nonce": str(nonce),
        "signature": sign(account, account.address + job_id + extra + str(nonce)),
    }


def result_params(s: Any, account: Any, job_id: str, index: str) -> dict[str, str]:
    return {**signed_job_params(s, account, job_id, index), "index": index}


# --- shape assertions --------------------------------------------------------------------------------


def assert_field_errors(response: httpx.Response, *fields: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == "Validation error" and body["success"] is False, body
    assert set(fields) <= set(body["errors"]), body
    return dict(body["errors"])


def assert_resource_error(response: httpx.Response, resource: str, code: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == {resource: code}, body
    return dict(body)


def assert_error_text(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and text in body["error"], body


def assert_signature_refused(response: httpx.Response) -> str:
    errors = assert_field_errors(response, "signature")
    signature = errors["signature"]
    return signature if isinstance(signature, str) else " ".join(signature)


# --- module fixtures: one job of the first consumer, started early and finished later -----------------

_WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@pytest.fixture(scope="module", autouse=True)
def code_location_loaded(ocean_stack: Any) -> None:
    """Fail at once, with the reason, when the stack's code location did not load: every job start
    would otherwise be a 503 "Could not find Pipeline" in each test."""
    entries = graphql(ocean_stack, _WORKSPACE)["workspaceOrError"]["locationEntries"]
    errors = [
        entry["locationOrLoadError"].get("message", "")
        for entry in entries
        if (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError"
    ]
    if errors:
        pytest.fail(f"the stack's Dagster code location failed to load: {errors[0][:300]}")


@dataclass
class StartedJob:
    job: dict[str, Any]
    body: dict[str, Any]
    orders: Orders


@pytest.fixture(scope="module")
def job_a(ocean_stack: Any) -> StartedJob:
    """A trusted-algorithm job of `consumer`, started with the exact body kept for replays."""
    s = ocean_stack
    orders = fresh_orders(s, s.consumer)
    body = start_body(s, s.consumer, *refs(s.dataset, orders.dataset_tx, s.algorithm, orders.algorithm_tx))
    response = start(s, body)
    assert response.status_code == 200, response.text
    (job,) = response.json()
    assert job["status"] == 1 and job["agreementId"] == orders.dataset_tx
    return StartedJob(job, body, orders)


@pytest.fixture(scope="module")
def finished_a(ocean_stack: Any, job_a: StartedJob) -> dict[str, Any]:
    job = wait_for_status(ocean_stack.provider, ocean_stack.consumer.address, job_a.job["jobId"], timeout=120)
    assert job["status"] == 70 and job["stopreq"] == 0, job
    return job


# --- malformed requests: nothing reaches the chain or Dagster ----------------------------------------


@pytest.mark.parametrize(
    ("missing", "field"),
    [
        ("consumerAddress", "consumerAddress"),
        ("signature", "signature"),
        ("nonce", "nonce"),
        ("environment", "environment"),
        ("dataset", "dataset"),
        ("algorithm", "algorithm"),
        ("dataset.documentId", "dataset.documentId"),
        ("dataset.serviceId", "dataset.serviceId"),
    ],
)
def test_start_without_a_required_field_is_a_field_error(ocean_stack: Any, missing: str, field: str) -> None:
    s = ocean_stack
    body = start_body(s, s.consumer, *refs(s.dataset, "0x" + "11" * 32, s.algorithm, "0x" + "22" * 32))
    if "." in missing:
        outer, inner = missing.split(".")
        del body[outer][inner]
    else:
        del body[missing]
    nonce = s.provider.nonce(s.consumer.address)
    with nothing_started(s, s.consumer):
        assert_field_errors(start(s, body), field)
    assert s.provider.nonce(s.consumer.address) == nonce  # refused before the nonce was spent


def test_start_without_a_dataset_order_names_the_field(ocean_stack: Any) -> None:
    s = ocean_stack
    body = start_body(s, s.consumer, *refs(s.dataset, None, s.algorithm, "0x" + "22" * 32))
    with nothing_started(s, s.consumer):
        assert_field_errors(start(s, body), "dataset.transferTxId")


@pytest.mark.parametrize(
    ("route", "params", "fields"),
    [
        ("compute", {"jobId": "x"}, ["consumerAddress"]),  # status
        ("computeResult", {"consumerAddress": "0x" + "ab" * 20, "jobId": "x"}, ["index"]),
    ],
)
def test_unsigned_reads_without_required_fields_are_field_errors(
    ocean_stack: Any, route: str, params: dict[str, str], fields: list[str]
) -> None:
    assert_field_errors(http(ocean_stack, "GET", route, params=params), *fields)


def test_stop_without_a_signature_is_a_field_error(ocean_stack: Any) -> None:
    s = ocean_stack
    response = http(s, "PUT", "compute", json={"consumerAddress": s.consumer.address, "jobId": "x"})
    assert_field_errors(response, "nonce", "signature")


def test_initialize_without_required_fields_is_a_field_error(ocean_stack: Any) -> None:
    s = ocean_stack
    response = http(s, "POST", "initializeCompute", json={"algorithm": {}, "compute": {"env": s.env["id"]}})
    assert_field_errors(response, "datasets", "consumerAddress", "compute.validUntil")


@pytest.mark.parametrize("route", ["compute", "initializeCompute"])
@pytest.mark.parametrize(
    ("content", "text"),
    [
        (b'{"consumerAddress": "0x', "the request body is not valid JSON"),
        (b"\xff\xfe not utf-8", "the request body is not valid JSON"),
        (b'["a", "list"]', "the request body must be a JSON object"),
    ],
)
def test_malformed_json_is_a_400_error(ocean_stack: Any, route: str, content: bytes, text: str) -> None:
    s = ocean_stack
    with nothing_started(s, s.consumer):
        response = http(s, "POST", route, content=content, headers={"Content-Type": "application/json"})
    assert_error_text(response, 400, text)


def test_initialize_with_valid_until_in_the_past_is_refused(ocean_stack: Any) -> None:
    s = ocean_stack
    for valid_until in (s.chain.block_timestamp() - 10, 0):
        response = http(
            s,
            "POST",
            "initializeCompute",
            json={
                "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
                "algorithm": {"documentId": s.algorithm.did, "serviceId": s.algorithm.service_id},
                "compute": {"env": s.env["id"], "validUntil": valid_until},
                "consumerAddress": s.consumer.address,
            },
        )
        assert response.status_code == 400 and response.json() == {
            "error": "The validUntil value is not correct."
        }


def test_unknown_environment_is_refused(ocean_stack: Any) -> None:
    s = ocean_stack
    orders = fresh_orders(s, s.consumer)
    body = start_body(
        s, s.consumer, *refs(s.dataset, orders.dataset_tx, s.algorithm, orders.algorithm_tx), "no-such-env"
    )
    with nothing_started(s, s.consumer, orders.dataset_tx):
        response = start(s, body)
    assert response.status_code == 400 and response.json() == {"error": "Compute environment does not exist"}
    initialize = http(
        s,
        "POST",
        "initializeCompute",
        json={
            "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
            "algorithm": {"documentId": s.algorithm.did, "serviceId": s.algorithm.service_id},
            "compute": {"env": "no-such-env", "validUntil": s.chain.block_timestamp() + 600},
            "consumerAddress": s.consumer.address,
        },
    )
    assert initialize.status_code == 400
    assert initialize.json() == {"error": "Compute environment does not exist"}


def test_unknown_did_is_did_not_found(ocean_stack: Any) -> None:
    s = ocean_stack
    unknown = "did:op:" + hashlib.sha256(b"no such asset").hexdigest()
    dataset, algorithm = refs(s.dataset, "0x" + "11" * 32, s.algorithm, "0x" + "22" * 32)
    with nothing_started(s, s.consumer):
        response = start(s, start_body(s, s.consumer, {**dataset, "documentId": unknown}, algorithm))
        assert_resource_error(response, "dataset", "did_not_found")
        response = start(s, start_body(s, s.consumer, dataset, {**algorithm, "documentId": unknown}))
        assert_resource_error(response, "algorithm", "did_not_found")
    initialize = http(
        s,
        "POST",
        "initializeCompute",
        json={
            "datasets": [{"documentId": unknown, "serviceId": "compute"}],
            "algorithm": {"documentId": s.algorithm.did, "serviceId": s.algorithm.service_id},
            "compute": {"env": s.env["id"], "validUntil": s.chain.block_timestamp() + 600},
            "consumerAddress": s.consumer.address,
        },
    )
    assert_resource_error(initialize, "dataset", "did_not_found")


# --- signatures and nonces ---------------------------------------------------------------------------


def test_wrong_signature_is_refused_and_spends_no_nonce(ocean_stack: Any) -> None:
    s = ocean_stack
    orders = fresh_orders(s, s.consumer)
    dataset, algorithm = refs(s.dataset, orders.dataset_tx, s.algorithm, orders.algorithm_tx)
    nonce = s.provider.nonce(s.consumer.address)
    other_did = {**dataset, "documentId": s.raw_dataset.did}
    bodies = [
        # Signed by another key for this consumer.
        start_body(s, s.consumer, dataset, algorithm, signer=s.other_consumer),
        # The consumer's own signature, over another message (another DID).
        {
            **start_body(s, s.consumer, dataset, algorithm),
            "signature": start_body(s, s.consumer, other_did, algorithm)["signature"],
        },
        # Not a signature at all.
        {**start_body(s, s.consumer, dataset, algorithm), "signature": "0x1234"},
        {**start_body(s, s.consumer, dataset, algorithm), "signature": "0x" + "zz" * 65},
    ]
    with nothing_started(s, s.consumer, orders.dataset_tx):
        for body in bodies:
            text = assert_signature_refused(start(s, body))
            assert "Invalid signature" in text
    assert s.provider.nonce(s.consumer.address) == nonce


def test_same_nonce_twice_is_refused(ocean_stack: Any, job_a: StartedJob) -> None:
    """job_a's exact request, replayed: with its own order, and with a fresh unused one (the
    signature covers consumerAddress + documentId + nonce only, so only the nonce can stop it)."""
    s = ocean_stack
    assert len(runs_tagged(s, engine.AGREEMENT_ID, job_a.orders.dataset_tx)) == 1
    replay = start(s, job_a.body)
    text = assert_signature_refused(replay)
    assert f"expected nonce ({job_a.body['nonce']})" in text
    assert len(runs_tagged(s, engine.AGREEMENT_ID, job_a.orders.dataset_tx)) == 1

    orders = fresh_orders(s, s.consumer)
    body = {
        **job_a.body,
        "dataset": {**job_a.body["dataset"], "transferTxId": orders.dataset_tx},
        "algorithm": {**job_a.body["algorithm"], "transferTxId": orders.algorithm_tx},
    }
    with nothing_started(s, s.consumer, orders.dataset_tx):
        assert_signature_refused(start(s, body))


def test_lower_nonce_is_refused(ocean_stack: Any, job_a: StartedJob) -> None:
    s = ocean_stack
    orders = fresh_orders(s, s.consumer)
    dataset, algorithm = refs(s.dataset, orders.dataset_tx, s.algorithm, orders.algorithm_tx)
    current = s.provider.nonce(s.consumer.address)
    assert current >= int(job_a.body["nonce"])
    with nothing_started(s, s.consumer, orders.dataset_tx):
        for nonce in (current - 1, int(job_a.body["nonce"]) - 1, 0):
            text = assert_signature_refused(
                start(s, start_body(s, s.consumer, dataset, algorithm, nonce=nonce))
            )
            assert f"expected nonce ({nonce}) > current nonce ({current})" in text
    assert s.provider.nonce(s.consumer.address) == current


# --- another consumer's job and results --------------------------------------------------------------


def test_another_consumers_job_is_not_found(ocean_stack: Any, job_a: StartedJob) -> None:
    """Consumer B cannot see, stop or download consumer A's job; A's job runs on, unstopped."""
    s = ocean_stack
    job_id = job_a.job["jobId"]
    status = http(s, "GET", "compute", params={"consumerAddress": s.other_consumer.address, "jobId": job_id})
    assert status.status_code == 404 and isinstance(status.json()["error"], str)
    # By agreement: nothing of A's is listed for B.
    by_agreement = http(
        s,
        "GET",
        "compute",
        params={"consumerAddress": s.other_consumer.address, "agreementId": job_a.orders.dataset_tx},
    )
    assert by_agreement.status_code == 200 and by_agreement.json() == []

    stop = http(s, "PUT", "compute", params=signed_job_params(s, s.other_consumer, job_id, ""))
    assert stop.status_code == 404 and isinstance(stop.json()["error"], str)
    delete = http(s, "DELETE", "compute", params=signed_job_params(s, s.other_consumer, job_id, ""))
    assert delete.status_code == 404 and isinstance(delete.json()["error"], str)
    result = http(s, "GET", "computeResult", params=result_params(s, s.other_consumer, job_id, "0"))
    assert result.status_code == 404 and isinstance(result.json()["error"], str)

    (mine,) = s.provider.status(s.consumer.address, job_id)
    assert mine["stopreq"] == 0 and mine["runStatus"] not in ("CANCELING", "CANCELED")


def test_another_consumers_result_is_not_found(ocean_stack: Any, finished_a: dict[str, Any]) -> None:
    s = ocean_stack
    for index in range(len(finished_a["results"])):
        response = http(
            s,
            "GET",
            "computeResult",
            params=result_params(s, s.other_consumer, finished_a["jobId"], str(index)),
        )
        assert response.status_code == 404, response.text
        assert isinstance(response.json()["error"], str)
        assert "content-disposition" not in response.headers
    # Signing as B while claiming to be A is a bad signature, not a download.
    params = result_params(s, s.consumer, finished_a["jobId"], "0")
    params["signature"] = result_params(s, s.other_consumer, finished_a["jobId"], "0")["signature"]
    assert_signature_refused(http(s, "GET", "computeResult", params=params))


def test_status_of_an_unknown_job_is_404_with_an_error(ocean_stack: Any) -> None:
    s = ocean_stack
    response = http(s, "GET", "compute", params={"consumerAddress": s.consumer.address, "jobId": "f" * 32})
    assert response.status_code == 404 and isinstance(response.json()["error"], str)


def test_result_index_out_of_range_is_404(ocean_stack: Any, finished_a: dict[str, Any]) -> None:
    s = ocean_stack
    count = len(finished_a["results"])
    for index in (count, count + 7):
        response = http(
            s, "GET", "computeResult", params=result_params(s, s.consumer, finished_a["jobId"], str(index))
        )
        assert response.status_code == 404, response.text
        assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize("index", ["abc", "-1", "1.5", "", "0x1"])
def test_result_index_that_is_not_an_integer_is_a_field_error(
    ocean_stack: Any, finished_a: dict[str, Any], index: str
) -> None:
    s = ocean_stack
    params = result_params(s, s.consumer, finished_a["jobId"], index)
    assert_field_errors(http(s, "GET", "computeResult", params=params), "index")


# --- orders ------------------------------------------------------------------------------------------


def test_order_of_another_datatoken_is_refused(ocean_stack: Any) -> None:
    """A paid order of the raw dataset (another datatoken) presented for `dataset`, and the dataset's
    own order presented as the algorithm's."""
    s = ocean_stack
    foreign = fresh_orders(s, s.consumer, dataset=s.raw_dataset)
    own = fresh_orders(s, s.consumer)
    with nothing_started(s, s.consumer, foreign.dataset_tx, own.dataset_tx):
        body = start_body(s, s.consumer, *refs(s.dataset, foreign.dataset_tx, s.algorithm, own.algorithm_tx))
        assert_resource_error(start(s, body), "dataset.serviceId", "order_invalid")
        body = start_body(s, s.consumer, *refs(s.dataset, own.dataset_tx, s.algorithm, own.dataset_tx))
        assert_resource_error(start(s, body), "algorithm", "in_use_or_not_on_chain")


def _reverted_tx(s: Any) -> str:
    """A mined, reverted transaction of the dataset's datatoken (a transfer beyond the balance)."""
    from c2d_core.chain import TransactionReverted

    contract = s.chain.contracts.at("ERC20Template", s.dataset.datatoken)
    call = contract.functions.transfer(s.other_consumer.address, 10**30)
    with pytest.raises(TransactionReverted) as caught:
        s.chain.send(s.consumer, call, gas=300_000)
    assert caught.value.tx_hash
    receipt = s.chain.w3.eth.get_transaction_receipt(caught.value.tx_hash)
    assert receipt["status"] == 0
    return str(caught.value.tx_hash)


def test_reverted_or_unknown_tx_is_refused(ocean_stack: Any) -> None:
    s = ocean_stack
    orders = fresh_orders(s, s.consumer)
    unknown = "0x" + os.urandom(32).hex()
    for bad in (unknown, _reverted_tx(s), "not-a-tx"):
        with nothing_started(s, s.consumer, bad, orders.dataset_tx):
            body = start_body(s, s.consumer, *refs(s.dataset, bad, s.algorithm, orders.algorithm_tx))
            assert_resource_error(start(s, body), "dataset.serviceId", "order_invalid")
            body = start_body(s, s.consumer, *refs(s.dataset, orders.dataset_tx, s.algorithm, bad))
            assert_resource_error(start(s, body), "algorithm", "in_use_or_not_on_chain")


def test_order_for_another_service_index_is_refused(ocean_stack: Any) -> None:
    """The datatoken's startOrder names service index 1; the dataset's compute service is index 0."""
    s = ocean_stack
    answer = quote(s, s.consumer, s.dataset, s.algorithm, s.env["id"])
    dataset_tx = pay(s, s.consumer, s.dataset, answer["datasets"][0]["providerFee"], service_index=1)
    algorithm_tx = pay(s, s.consumer, s.algorithm, answer["algorithm"]["providerFee"])
    body = start_body(s, s.consumer, *refs(s.dataset, dataset_tx, s.algorithm, algorithm_tx))
    with nothing_started(s, s.consumer, dataset_tx):
        body_json = assert_resource_error(start(s, body), "dataset.serviceId", "order_invalid")
    assert "service index" in body_json["message"]


def test_fee_for_another_environment_is_refused(ocean_stack: Any) -> None:
    """Fees quoted (and paid) for the second environment, used to start in the first."""
    s = ocean_stack
    orders = fresh_orders(s, s.consumer, env=s.other_env)
    assert s.other_env["id"] != s.env["id"]
    body = start_body(s, s.consumer, *refs(s.dataset, orders.dataset_tx, s.algorithm, orders.algorithm_tx))
    with nothing_started(s, s.consumer, orders.dataset_tx):
        body_json = assert_resource_error(start(s, body), "dataset.serviceId", "order_invalid")
    assert "environment" in body_json["message"]


def test_fee_replayed_by_another_consumer_is_refused(ocean_stack: Any) -> None:
    """B presents A's order; then B pays its own order but with A's signed provider fee."""
    s = ocean_stack
    a_orders = fresh_orders(s, s.consumer)
    dataset, algorithm = refs(s.dataset, a_orders.dataset_tx, s.algorithm, a_orders.algorithm_tx)
    with nothing_started(s, s.other_consumer, a_orders.dataset_tx):
        body_json = assert_resource_error(
            start(s, start_body(s, s.other_consumer, dataset, algorithm)),
            "dataset.serviceId",
            "order_invalid",
        )
    # A's order names A as payer: B is neither its consumer nor its payer.
    assert "neither the order's consumer nor its payer" in body_json["message"]

    a_quote = quote(s, s.consumer, s.dataset, s.algorithm, s.env["id"])
    b_dataset_tx = pay(s, s.other_consumer, s.dataset, a_quote["datasets"][0]["providerFee"])
    b_algorithm_tx = pay(s, s.other_consumer, s.algorithm, a_quote["algorithm"]["providerFee"])
    body = start_body(s, s.other_consumer, *refs(s.dataset, b_dataset_tx, s.algorithm, b_algorithm_tx))
    with nothing_started(s, s.other_consumer, b_dataset_tx):
        body_json = assert_resource_error(start(s, body), "dataset.serviceId", "order_invalid")
    assert "another consumer" in body_json["message"]


# --- algorithm policy --------------------------------------------------------------------------------


def test_untrusted_algorithm_is_refused(ocean_stack: Any) -> None:
    s = ocean_stack
    untrusted = s.untrusted_algorithm
    initialize = http(
        s,
        "POST",
        "initializeCompute",
        json={
            "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
            "algorithm": {"documentId": untrusted.did, "serviceId": untrusted.service_id},
            "compute": {"env": s.env["id"], "validUntil": s.chain.block_timestamp() + 600},
            "consumerAddress": s.consumer.address,
        },
    )
    assert_resource_error(initialize, "dataset", "not_trusted_algo")
    # Real orders for both (the untrusted algorithm's fee comes from a quote on the raw dataset, which
    # trusts any algorithm): the refusal is the trust policy, not a missing payment.
    dataset_tx = fresh_orders(s, s.consumer).dataset_tx
    algorithm_tx = fresh_orders(s, s.consumer, dataset=s.raw_dataset, algorithm=untrusted).algorithm_tx
    body = start_body(s, s.consumer, *refs(s.dataset, dataset_tx, untrusted, algorithm_tx))
    with nothing_started(s, s.consumer, dataset_tx):
        assert_resource_error(start(s, body), "dataset", "not_trusted_algo")


class _FilesForAnotherKey:
    """Publishes through the real Provider, except the service files, encrypted to another key."""

    def __init__(self, provider: Any, public_key: str) -> None:
        self._provider = provider
        self._public_key = public_key
        self._files_done = False
        self.url = provider.url

    def root(self) -> dict[str, Any]:
        return dict(self._provider.root())

    def encrypt(self, data: bytes, chain_id: int) -> str:
        from c2d_core.crypto import encrypt_for

        if not self._files_done:
            self._files_done = True
            return encrypt_for(self._public_key, data)
        return str(self._provider.encrypt(data, chain_id))


@pytest.fixture(scope="module")
def policy_assets(ocean_stack: Any) -> dict[str, PublishedAsset]:
    """Datasets trusting `algorithm` with a wrong filesChecksum / containerSectionChecksum, and an
    algorithm whose files this Provider cannot decrypt, trusted with its true checksums."""
    from c2d_core.chain import dev_account
    from c2d_core.crypto import public_key_of
    from c2d_core.ocean.checksums import trusted_algorithm_entry

    s = ocean_stack
    true_entry = trusted_algorithm_entry(
        s.algorithm.did, hashlib.sha256(s.algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
    )
    algorithm_files = [{"type": "url", "url": f"{s.origin_url}/algorithms/summary.py", "method": "GET"}]
    data_files = [{"type": "url", "url": f"{s.origin_url}/data/weather.csv", "method": "GET"}]
    stranger_key = "0x" + bytes(dev_account(4).key).hex()
    sealed = publish_asset(
        s.chain,
        s.publisher,
        _FilesForAnotherKey(s.provider, public_key_of(stranger_key)),
        name="Sealed",
        files=algorithm_files,
        asset_type="algorithm",
        service_type="access",
        container=SAMPLE_CONTAINER,
    )
    sealed_entry = trusted_algorithm_entry(
        sealed.did, hashlib.sha256(s.algorithm_bytes).hexdigest(), SAMPLE_CONTAINER
    )
    entries = {
        "bad_files": {**true_entry, "filesChecksum": hashlib.sha256(b"other code").hexdigest()},
        "bad_container": {**true_entry, "containerSectionChecksum": hashlib.sha256(b"x").hexdigest()},
        "trusts_sealed": sealed_entry,
    }
    sealed_dataset = publish_asset(
        s.chain,
        s.publisher,
        _FilesForAnotherKey(s.provider, public_key_of(stranger_key)),
        name="Sealed data",
        files=data_files,
        asset_type="dataset",
        service_type="compute",
        compute={"allowRawAlgorithm": False, "publisherTrustedAlgorithms": [true_entry]},
    )
    assets = {"sealed": sealed, "sealed_dataset": sealed_dataset}
    for name, entry in entries.items():
        assets[name] = publish_asset(
            s.chain,
            s.publisher,
            s.provider,
            name=name.replace("_", " ").title(),
            files=data_files,
            asset_type="dataset",
            service_type="compute",
            compute={"allowRawAlgorithm": False, "publisherTrustedAlgorithms": [entry]},
        )
    for asset in assets.values():
        mint_to(s.chain, s.publisher, asset, s.consumer.address, 5)
    return assets


def _initialize(s: Any, dataset: PublishedAsset, algorithm: PublishedAsset) -> httpx.Response:
    return http(
        s,
        "POST",
        "initializeCompute",
        json={
            "datasets": [{"documentId": dataset.did, "serviceId": dataset.service_id}],
            "algorithm": {"documentId": algorithm.did, "serviceId": algorithm.service_id},
            "compute": {"env": s.env["id"], "validUntil": s.chain.block_timestamp() + 600},
            "consumerAddress": s.consumer.address,
        },
    )


@pytest.mark.parametrize(
    ("dataset_name", "code"),
    [
        ("bad_files", "algorithm_file_checksum_mismatch"),
        ("bad_container", "algorithm_container_checksum_mismatch"),
    ],
)
def test_checksum_mismatch_is_refused(
    ocean_stack: Any, policy_assets: dict[str, PublishedAsset], dataset_name: str, code: str
) -> None:
    s = ocean_stack
    dataset = policy_assets[dataset_name]
    assert_resource_error(_initialize(s, dataset, s.algorithm), "dataset", code)
    # Orders paid through a quote for the algorithm on the dataset that trusts it as it is.
    good = fresh_orders(s, s.consumer)
    dataset_tx = "0x" + "33" * 32  # the policy refuses before any order is read
    body = start_body(s, s.consumer, *refs(dataset, dataset_tx, s.algorithm, good.algorithm_tx))
    with nothing_started(s, s.consumer, dataset_tx):
        assert_resource_error(start(s, body), "dataset", code)


def test_algorithm_whose_files_this_provider_cannot_read_is_file_unavailable(
    ocean_stack: Any, policy_assets: dict[str, PublishedAsset]
) -> None:
    """The trusted entry pins filesChecksum, the Provider cannot decrypt the files to check it: a
    client error about the algorithm (Ocean's `file_unavailable`), not a backend failure."""
    s = ocean_stack
    response = _initialize(s, policy_assets["trusts_sealed"], policy_assets["sealed"])
    assert_resource_error(response, "algorithm", "file_unavailable")


def test_dataset_whose_files_this_provider_cannot_read_is_refused_before_payment(
    ocean_stack: Any, policy_assets: dict[str, PublishedAsset]
) -> None:
    """Ocean's `compute_services_not_in_same_provider`: no fee is quoted and no job starts (it could
    only end in 31, data provisioning failed, after the consumer paid)."""
    s = ocean_stack
    dataset = policy_assets["sealed_dataset"]
    code = "compute_services_not_in_same_provider"
    assert_resource_error(_initialize(s, dataset, s.algorithm), "dataset", code)
    good = fresh_orders(s, s.consumer)
    dataset_tx = "0x" + "44" * 32
    body = start_body(s, s.consumer, *refs(dataset, dataset_tx, s.algorithm, good.algorithm_tx))
    with nothing_started(s, s.consumer, dataset_tx):
        assert_resource_error(start(s, body), "dataset", code)


def test_raw_algorithm_is_refused_where_not_allowed(ocean_stack: Any) -> None:
    s = ocean_stack
    raw = {"meta": {"rawcode": RAW_CODE, "container": SAMPLE_CONTAINER}}
    initialize = http(
        s,
        "POST",
        "initializeCompute",
        json={
            "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
            "algorithm": raw,
            "compute": {"env": s.env["id"], "validUntil": s.chain.block_timestamp() + 600},
            "consumerAddress": s.consumer.address,
        },
    )
    assert_resource_error(initialize, "dataset", "no_raw_algo_allowed")
    dataset_tx = fresh_orders(s, s.consumer).dataset_tx
    dataset = {"documentId": s.dataset.did, "serviceId": s.dataset.service_id, "transferTxId": dataset_tx}
    with nothing_started(s, s.consumer, dataset_tx):
        assert_resource_error(
            start(s, start_body(s, s.consumer, dataset, raw)), "dataset", "no_raw_algo_allowed"
        )


def test_raw_algorithm_runs_where_allowed(ocean_stack: Any, tmp_path: Path) -> None:
    s = ocean_stack
    raw = {"meta": {"rawcode": RAW_CODE, "container": SAMPLE_CONTAINER}}
    orders = fresh_orders(s, s.other_consumer, dataset=s.raw_dataset, algorithm=raw)
    assert "algorithm" not in orders.quote
    dataset = {
        "documentId": s.raw_dataset.did,
        "serviceId": s.raw_dataset.service_id,
        "transferTxId": orders.dataset_tx,
    }
    response = start(s, start_body(s, s.other_consumer, dataset, raw))
    assert response.status_code == 200, response.text
    (job,) = response.json()
    assert job["algoDID"] == "raw"
    final = wait_for_status(s.provider, s.other_consumer.address, job["jobId"], timeout=120)
    assert final["status"] == 70, final
    output = next(r for r in final["results"] if r["type"] == "output")
    downloaded = s.provider.result(s.other_consumer, job["jobId"], int(output["index"]))
    assert downloaded.status_code == 200
    data_rows = (Path(__file__).resolve().parents[2] / "examples" / "data" / "weather.csv").read_text()
    assert json.loads(downloaded.content) == {"rows": len(data_rows.strip().splitlines()) - 1}


# --- fileinfo by DID ---------------------------------------------------------------------------------


def test_fileinfo_by_did_and_service_id(ocean_stack: Any) -> None:
    s = ocean_stack
    host = s.origin_url.split("//", 1)[1]
    response = http(s, "POST", "fileinfo", json={"did": s.dataset.did, "serviceId": "compute", "checksum": 1})
    assert response.status_code == 200, response.text
    data = (Path(__file__).resolve().parents[2] / "examples" / "data" / "weather.csv").read_bytes()
    (info,) = response.json()
    assert info["index"] == 0 and info["valid"] is True and info["type"] == "url"
    assert info["contentLength"] == str(len(data))
    assert info["checksum"] == hashlib.sha256(data).hexdigest() and info["checksumType"] == "sha256"
    assert "url" not in info
    for needle in (host, "weather.csv", "http://"):
        assert needle not in response.text
        assert all(needle not in value for value in response.headers.values())

    # ocean.py's trusted-algorithm helper: the algorithm's filesChecksum from fileinfo.
    algo = http(s, "POST", "fileinfo", json={"did": s.algorithm.did, "serviceId": "access", "checksum": True})
    assert algo.status_code == 200
    assert [item["checksum"] for item in algo.json()] == [hashlib.sha256(s.algorithm_bytes).hexdigest()]

    unknown = "did:op:" + hashlib.sha256(b"nothing here").hexdigest()
    missing = http(s, "POST", "fileinfo", json={"did": unknown, "serviceId": "compute"})
    assert_resource_error(missing, "did", "did_not_found")
    no_service = http(s, "POST", "fileinfo", json={"did": s.dataset.did, "serviceId": "nope"})
    assert_resource_error(no_service, "serviceId", "not_found")
    only_did = http(s, "POST", "fileinfo", json={"did": s.dataset.did})
    assert_error_text(only_did, 400, "needs both")


def test_fileinfo_by_did_of_files_for_another_provider_is_refused(
    ocean_stack: Any, policy_assets: dict[str, PublishedAsset]
) -> None:
    s = ocean_stack
    response = http(s, "POST", "fileinfo", json={"did": policy_assets["sealed"].did, "serviceId": "access"})
    assert_error_text(response, 400, "cannot be decrypted by this Provider")


# --- leaks -------------------------------------------------------------------------------------------

_RUN = """
query($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { runConfigYaml tags { key value } } }
}
"""
_LOGS = """
query($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection { cursor hasMore events { __typename ... on MessageEvent { message } } }
  }
}
"""


def _run_event_messages(s: Any, run_id: str) -> list[str]:
    messages: list[str] = []
    cursor = None
    while True:
        page = graphql(s, _LOGS, {"runId": run_id, "cursor": cursor})["logsForRun"]
        assert page["__typename"] == "EventConnection", page
        messages.extend(str(event.get("message") or "") for event in page["events"])
        if not page["hasMore"]:
            return messages
        cursor = page["cursor"]


def test_the_dataset_location_leaks_nowhere(ocean_stack: Any, finished_a: dict[str, Any]) -> None:
    from c2d_core.chain import dev_account
    from c2d_core.crypto import decrypt_service_files
    from c2d_core.ocean.ddo_reader import decode_ddo, read_metadata_events
    from c2d_core.publishing import ecies_decryptor

    s = ocean_stack
    host = s.origin_url.split("//", 1)[1]
    dataset_url = f"{s.origin_url}/data/weather.csv"
    needles = [dataset_url, host, "/data/weather.csv"]

    # The needle is right: it is what the dataset's encrypted files really hold.
    provider_key = "0x" + bytes(dev_account(9).key).hex()
    ddo = decode_ddo(read_metadata_events(s.chain, s.dataset.nft)[-1], ecies_decryptor(provider_key))
    files = decrypt_service_files(provider_key, ddo["services"][0]["files"])
    assert files[0]["url"] == dataset_url

    seen: dict[str, str] = {}

    def record(label: str, response: httpx.Response) -> None:
        assert response.status_code in (200, 206), (label, response.status_code, response.text)
        headers = "\n".join(f"{key}: {value}" for key, value in response.headers.items())
        seen[label] = headers + "\n\n" + response.content.decode("utf-8", errors="replace")

    job_id = finished_a["jobId"]
    record("root", httpx.get(f"{s.provider.url}/", timeout=30))
    record("environments", http(s, "GET", "computeEnvironments", params={"chainId": s.chain.chain_id}))
    record("status", http(s, "GET", "compute", params={"consumerAddress": s.consumer.address}))
    record(
        "status job",
        http(s, "GET", "compute", params={"consumerAddress": s.consumer.address, "jobId": job_id}),
    )
    for entry in finished_a["results"]:
        index = str(entry["index"])
        record(
            f"result {index}",
            http(s, "GET", "computeResult", params=result_params(s, s.consumer, job_id, index)),
        )
    record(
        "initializeCompute",
        http(
            s,
            "POST",
            "initializeCompute",
            json={
                "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
                "algorithm": {"documentId": s.algorithm.did, "serviceId": s.algorithm.service_id},
                "compute": {"env": s.env["id"], "validUntil": s.chain.block_timestamp() + 600},
                "consumerAddress": s.consumer.address,
            },
        ),
    )
    assert len(finished_a["results"]) >= 4

    run_id = run_id_of(s, job_id)
    run = graphql(s, _RUN, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run"
    assert "encryptedFiles" in run["runConfigYaml"]  # the run config carries the blob, sealed
    seen["run config"] = run["runConfigYaml"]
    seen["run tags"] = json.dumps(run["tags"])
    messages = _run_event_messages(s, run_id)
    assert len(messages) > 5
    seen["run events"] = "\n".join(messages)

    logs = Path(s.running.home) / "stack-logs"
    log_files = sorted(path for path in logs.rglob("*") if path.is_file())
    assert {path.name for path in log_files} >= {"provider.log", "webserver.log", "daemon.log"}
    for path in log_files:
        seen[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    # The run's captured stdout/stderr (Dagster's compute logs) too.
    storage = Path(s.running.home) / "storage"
    for path in storage.rglob("*"):
        if path.is_file() and path.stat().st_size < 10 * 1024 * 1024:
            seen[str(path)] = path.read_bytes().decode("utf-8", errors="replace")

    leaks = [(label, needle) for label, text in seen.items() for needle in needles if needle in text]
    assert leaks == []
    # Nor anywhere else under the stack's home: run and event storage, result store, work dirs.
    home = Path(s.running.home)
    stored = [
        str(path.relative_to(home))
        for path in home.rglob("*")
        if path.is_file()
        and path.stat().st_size < 64 * 1024 * 1024
        and any(needle.encode() in path.read_bytes() for needle in needles)
    ]
    assert stored == []


# --- expiry: moves chain time forward, so it runs last ------------------------------------------------


def test_expired_fee_is_refused(ocean_stack: Any) -> None:
    s = ocean_stack
    orders = fresh_orders(s, s.consumer, valid_for=60)
    s.chain.rpc("evm_increaseTime", 120)
    s.chain.rpc("evm_mine")
    fee_valid_until = orders.quote["datasets"][0]["providerFee"]["validUntil"]
    assert s.chain.block_timestamp() > fee_valid_until
    body = start_body(s, s.consumer, *refs(s.dataset, orders.dataset_tx, s.algorithm, orders.algorithm_tx))
    with nothing_started(s, s.consumer, orders.dataset_tx):
        body_json = assert_resource_error(start(s, body), "dataset.serviceId", "order_invalid")
    assert "expired" in body_json["message"]
