"""What ocean.js 3.4 sends, beside ocean.py 3.1, against the real stack over HTTP (issue 12, item 1).

Each form is sent exactly as the reference (`reference/ocean-provider-api.md` §10-11) records it:
ocean.js signs with v = 27/28, sends nonces as JSON strings, polls status unsigned with
`consumerAddress, jobId, agreementId` (the agreement id without its 0x), and stops with a JSON body;
ocean.py signs with v = 0/1, sends integer nonces and signs its status polls. Requests are built by
hand (httpx, eth_account), so the test pins the wire, not a client library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eth_account.messages import encode_defunct
from eth_utils import keccak

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SERVICES = "/api/services"
NINES = "9" * 5000
ARABIC_ONE = "\u0661"


def http(s: Any, method: str, route: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{s.provider.url}{SERVICES}/{route}", timeout=60, **kwargs)


def sign_js(account: Any, message: str) -> str:
    """ocean.js: personal_sign over keccak(message), v = 27/28."""
    return str(account.sign_message(encode_defunct(primitive=keccak(text=message))).signature.to_0x_hex())


def sign_py(account: Any, message: str) -> str:
    """ocean.py 3.1: the same signature with v as the bare recovery id (0/1)."""
    raw = bytes.fromhex(sign_js(account, message)[2:])
    return "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()


def nonce(s: Any, address: str) -> int:
    return int(http(s, "GET", "nonce", params={"userAddress": address}).json()["nonce"])


def pay(s: Any, asset: Any, fee: dict[str, Any]) -> str:
    """startOrder as Ocean's compute clients do it: the environment's address as consumer."""
    from c2d_core.fees import ProviderFee, start_order

    return str(
        start_order(
            s.chain, s.consumer, asset.datatoken, s.env["consumerAddress"], 0, ProviderFee.from_wire(fee)
        )
    )


@dataclass
class Started:
    job: dict[str, Any]
    dataset_tx: str


def start_js(s: Any, spell: Callable[[str], str] = lambda tx: tx) -> Started:
    """initializeCompute, two startOrders, then computeStart as ocean.js sends it (nonce a JSON string);
    `spell` rewrites the dataset's transferTxId as the client spells it."""
    quote = http(
        s,
        "POST",
        "initializeCompute",
        json={
            "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
            "algorithm": {"documentId": s.algorithm.did, "serviceId": s.algorithm.service_id},
            "compute": {"env": s.env["id"], "validUntil": s.chain.block_timestamp() + 3600},
            "consumerAddress": s.consumer.address,
        },
    )
    assert quote.status_code == 200, quote.text
    answer = quote.json()
    dataset_tx = pay(s, s.dataset, answer["datasets"][0]["providerFee"])
    algorithm_tx = pay(s, s.algorithm, answer["algorithm"]["providerFee"])
    next_nonce = str(nonce(s, s.consumer.address) + 1)
    body = {
        "consumerAddress": s.consumer.address,
        "signature": sign_js(s.consumer, s.consumer.address + s.dataset.did + next_nonce),
        "nonce": next_nonce,
        "environment": s.env["id"],
        "dataset": {
            "documentId": s.dataset.did,
            "serviceId": s.dataset.service_id,
            "transferTxId": spell(dataset_tx),
        },
        "algorithm": {
            "documentId": s.algorithm.did,
            "serviceId": s.algorithm.service_id,
            "transferTxId": algorithm_tx,
        },
    }
    response = http(s, "POST", "compute", json=body)
    assert response.status_code == 200, response.text
    (job,) = response.json()
    return Started(job, dataset_tx)


def status(s: Any, **params: str) -> httpx.Response:
    # ocean.js sends Content-Type: application/json even on its bodiless GETs.
    return http(s, "GET", "compute", params=params, headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def js_job(ocean_stack: Any) -> Started:
    return start_js(ocean_stack)


@pytest.fixture(scope="module")
def finished_js(ocean_stack: Any, js_job: Started) -> dict[str, Any]:
    s, job_id = ocean_stack, js_job.job["jobId"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        (job,) = status(s, consumerAddress=s.consumer.address, jobId=job_id).json()
        if job["dateFinished"]:
            assert job["status"] == 70, job
            return dict(job)
        time.sleep(1)
    pytest.fail(f"job {job_id} did not finish")


def test_ocean_js_start_is_accepted_and_its_agreement_id_is_canonical(js_job: Started) -> None:
    assert js_job.job["status"] == 1
    assert js_job.job["agreementId"] == js_job.dataset_tx.lower() and js_job.dataset_tx.startswith("0x")


def test_ocean_js_status_poll_finds_the_job(ocean_stack: Any, js_job: Started) -> None:
    """ocean.js strips the 0x from the agreement id: that poll used to be a 404."""
    s, job_id, tx = ocean_stack, js_job.job["jobId"], js_job.dataset_tx
    for agreement in (tx[2:], tx[2:].upper(), tx, "not-an-agreement"):
        response = status(s, consumerAddress=s.consumer.address, jobId=job_id, agreementId=agreement)
        assert response.status_code == 200, (agreement, response.text)
        assert [job["jobId"] for job in response.json()] == [job_id]


def test_an_agreement_id_alone_is_compared_in_its_canonical_form(ocean_stack: Any, js_job: Started) -> None:
    s, job_id, tx = ocean_stack, js_job.job["jobId"], js_job.dataset_tx
    for agreement in (tx, tx[2:], tx.upper().replace("0X", "0x"), "0X" + tx[2:].upper()):
        response = status(s, consumerAddress=s.consumer.address, agreementId=agreement)
        assert response.status_code == 200, response.text
        assert job_id in [job["jobId"] for job in response.json()], agreement
    # Not a transaction hash at all: a field error, before any lookup.
    refused = status(s, consumerAddress=s.consumer.address, agreementId="0x1234")
    assert refused.status_code == 400 and "agreementId" in refused.json()["errors"]
    # Another consumer's agreement lists nothing.
    other = status(s, consumerAddress=s.other_consumer.address, agreementId=tx[2:])
    assert other.status_code == 200 and other.json() == []


def test_ocean_py_signed_status_poll_works_and_leaves_the_nonce_usable(
    ocean_stack: Any, js_job: Started
) -> None:
    s, job_id = ocean_stack, js_job.job["jobId"]
    current = nonce(s, s.consumer.address)
    poll_nonce = current + 1
    message = s.consumer.address + job_id + s.dataset.did + str(poll_nonce)
    params = {
        "consumerAddress": s.consumer.address,
        "documentId": s.dataset.did,
        "jobId": job_id,
        "nonce": str(poll_nonce),
        "signature": sign_py(s.consumer, message),
    }
    response = http(s, "GET", "compute", params=params)
    assert response.status_code == 200 and response.json()[0]["jobId"] == job_id
    # The poll's signature is ignored and its nonce not spent: the next signed call may use it.
    assert nonce(s, s.consumer.address) == current


def test_stop_with_a_json_body_and_a_canonicalised_transfer_tx(ocean_stack: Any) -> None:
    """A start whose transferTxId is spelled in capitals without 0x, stopped with ocean.js's JSON body
    (nonce a JSON string, agreementId without 0x, no documentId), signed consumer + jobId + nonce."""
    s = ocean_stack
    started = start_js(s, spell=lambda tx: tx[2:].upper())
    job, canonical = started.job, started.dataset_tx.lower()
    assert job["agreementId"] == canonical
    job_id = job["jobId"]

    # ocean.js 3.4's own stop signs consumer + jobId with no nonce: refused (as Ocean's Provider
    # refuses it), and the nonce is not spent.
    before = nonce(s, s.consumer.address)
    js_nonce = str(before + 1)
    js_body = {
        "signature": sign_js(s.consumer, s.consumer.address + job_id),
        "agreementId": canonical[2:],
        "consumerAddress": s.consumer.address,
        "nonce": js_nonce,
        "jobId": job_id,
    }
    refused = http(s, "PUT", "compute", json=js_body)
    assert refused.status_code == 400 and "signature" in refused.json()["errors"], refused.text
    assert nonce(s, s.consumer.address) == before

    signed = {**js_body, "signature": sign_js(s.consumer, s.consumer.address + job_id + js_nonce)}
    stopped = http(s, "PUT", "compute", json=signed)
    assert stopped.status_code == 200, stopped.text
    assert [item["jobId"] for item in stopped.json()] == [job_id]
    assert nonce(s, s.consumer.address) == before + 1

    # ocean.js's computeDelete sends no nonce: a field error naming it.
    delete = http(
        s,
        "DELETE",
        "compute",
        json={
            "documentId": s.dataset.did,
            "consumerAddress": s.consumer.address,
            "jobId": job_id,
            "signature": sign_js(s.consumer, s.consumer.address + job_id + s.dataset.did),
        },
    )
    assert delete.status_code == 400 and "nonce" in delete.json()["errors"], delete.text


def result_query(s: Any, job_id: str, index: str, *, v_recovery_id: bool = False) -> dict[str, str]:
    next_nonce = str(nonce(s, s.consumer.address) + 1)
    message = s.consumer.address + job_id + index + next_nonce
    signer = sign_py if v_recovery_id else sign_js
    return {
        "consumerAddress": s.consumer.address,
        "jobId": job_id,
        "index": index,
        "nonce": next_nonce,
        "signature": signer(s.consumer, message),
    }


def test_results_download_and_odd_numbers_are_400(ocean_stack: Any, finished_js: dict[str, Any]) -> None:
    s, job_id = ocean_stack, finished_js["jobId"]
    whole = http(s, "GET", "computeResult", params=result_query(s, job_id, "0"))
    assert whole.status_code == 200 and whole.content
    ocean_py = http(s, "GET", "computeResult", params=result_query(s, job_id, "0", v_recovery_id=True))
    assert ocean_py.status_code == 200 and ocean_py.content == whole.content
    # U+0661 used to be read as result 1; a Range of 5,000 nines used to crash int() into a 503.
    odd = http(s, "GET", "computeResult", params=result_query(s, job_id, ARABIC_ONE))
    assert odd.status_code == 400 and "index" in odd.json()["errors"], odd.text
    for header in (f"bytes={NINES}-", f"bytes=-{NINES}"):
        ranged = http(
            s, "GET", "computeResult", params=result_query(s, job_id, "0"), headers={"Range": header}
        )
        assert ranged.status_code == 400 and "Range" in ranged.json()["error"], ranged.text[:300]
    partial = http(
        s, "GET", "computeResult", params=result_query(s, job_id, "0"), headers={"Range": "bytes=0-0"}
    )
    assert partial.status_code == 206 and partial.content == whole.content[:1]
