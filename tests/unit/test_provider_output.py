"""The start request's `output` object (issue 8): validated into the workflow, or refused with a 400
in Ocean's field-error shape before the nonce is spent; and how the job JSON reports the asset.

The HTTP tests run the Provider app against a real local chain (anvil with Ocean's contracts): the
compute route's dependencies connect to it, although a bad `output` is refused before any chain call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from fastapi.testclient import TestClient

from c2d_core import engine
from c2d_core.workflow import Workflow
from provider_api.compute import parse_output
from provider_api.errors import OceanHTTPError
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.main import create_app
from provider_api.settings import ProviderSettings

CONSUMER: LocalAccount = Account.from_key("0x" + "c1" * 32)
OWNER = "0x" + "ab" * 20
DID = "did:op:" + "1" * 64
GOOD_METADATA = {"name": "Model", "description": "trained on Weather", "tags": ["model"], "license": "CC0"}


def refusal(raw: Any) -> dict[str, Any]:
    with pytest.raises(OceanHTTPError) as caught:
        parse_output(raw, CONSUMER.address)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert body["message"] == "Validation error" and body["success"] is False, body
    return dict(body["errors"])


# --- parse_output ---------------------------------------------------------------------------------


def test_absent_or_not_publishing_output_changes_nothing() -> None:
    assert parse_output(None, CONSUMER.address) is None
    assert parse_output("", CONSUMER.address) is None
    assert parse_output({}, CONSUMER.address) is None
    assert parse_output({"publishOutput": False}, CONSUMER.address) is None


def test_owner_defaults_to_the_consumer_and_is_checksummed() -> None:
    output = parse_output({"publishOutput": True, "metadata": GOOD_METADATA}, CONSUMER.address.lower())
    assert output is not None and output.owner == CONSUMER.address
    assert output.metadata is not None and output.metadata.name == "Model"
    chosen = parse_output(
        {"publishOutput": True, "publishAlgorithmLog": True, "metadata": GOOD_METADATA, "owner": OWNER},
        CONSUMER.address,
    )
    assert chosen is not None and chosen.owner is not None and chosen.owner.lower() == OWNER
    assert chosen.publish_algorithm_log is True


def test_a_json_string_is_read_as_the_object_and_ocean_legacy_keys_are_dropped() -> None:
    text = json.dumps(
        {"publishOutput": True, "metadata": GOOD_METADATA, "nodeUri": "http://x", "whitelist": []}
    )
    output = parse_output(text, CONSUMER.address)
    assert output is not None and output.publish_output


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"publishOutput": "yes", "metadata": GOOD_METADATA}, "output.publishOutput"),
        ({"publishOutput": 1, "metadata": GOOD_METADATA}, "output.publishOutput"),
        ({"publishOutput": True, "metadata": "Model"}, "output.metadata"),
        ({"publishOutput": True, "metadata": {**GOOD_METADATA, "tags": "model"}}, "output.metadata.tags"),
        ({"publishOutput": True, "metadata": {**GOOD_METADATA, "name": 7}}, "output.metadata.name"),
        ({"publishOutput": True, "metadata": GOOD_METADATA, "owner": 12}, "output.owner"),
        ({"publishoutput": True}, "output.publishoutput"),
        ([{"publishOutput": True}], "output"),
        ("not json", "output"),
        (42, "output"),
    ],
)
def test_wrong_types_are_field_errors(raw: Any, field: str) -> None:
    assert field in refusal(raw)


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"name": "x" * 257}, "output.metadata.name"),
        ({"name": "Model", "description": "d" * 100_000}, "output.metadata.description"),
        ({"name": "Model", "tags": ["t"] * 33}, "output.metadata.tags"),
        ({"name": "Model", "tags": ["t" * 65]}, "output.metadata.tags"),
        ({"name": ""}, "output.metadata.name"),
    ],
)
def test_huge_metadata_is_refused(metadata: dict[str, Any], field: str) -> None:
    assert field in refusal({"publishOutput": True, "metadata": metadata})


@pytest.mark.parametrize("owner", ["0x12", "0x" + "g" * 40, "ab" * 20, "0x" + "0" * 40])
def test_invalid_owner_is_refused(owner: str) -> None:
    errors = refusal({"publishOutput": True, "metadata": GOOD_METADATA, "owner": owner})
    assert "output.owner" in errors


def test_the_provider_cannot_be_the_owner() -> None:
    provider = Account.from_key("0x" + "9a" * 32).address
    with pytest.raises(OceanHTTPError) as caught:
        parse_output(
            {"publishOutput": True, "metadata": GOOD_METADATA, "owner": provider.lower()}, OWNER, provider
        )
    assert "output.owner" in caught.value.body["errors"]


def test_publish_algorithm_log_needs_publish_output_and_publishing_needs_a_name() -> None:
    assert "publishOutput" in refusal({"publishAlgorithmLog": True})["output"]
    assert "metadata" in refusal({"publishOutput": True})["output"]


# --- the workflow and the job JSON ----------------------------------------------------------------


def workflow(output: dict[str, Any] | None) -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": "a" * 32,
            "owner": CONSUMER.address,
            "environment": "ocean-compute",
            "inputs": [{"did": DID, "serviceId": "compute", "files": {"encryptedFiles": "0xab"}}],
            "algorithm": {
                "rawcode": "print(1)",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
            **({"output": output} if output is not None else {}),
        }
    )


def test_a_publishing_job_is_tagged_at_submission_and_an_ordinary_one_is_not() -> None:
    output = parse_output({"publishOutput": True, "metadata": GOOD_METADATA}, CONSUMER.address)
    assert output is not None
    tags = engine.submission_tags(workflow(output.model_dump(by_alias=True)))
    assert tags[engine.OUTPUT_REQUESTED] == "1"
    assert engine.OUTPUT_REQUESTED not in engine.submission_tags(workflow(None))


def record(run_status: str, **tags: str) -> JobRecord:
    base = {engine.JOB_ID: "a" * 32, engine.OWNER: CONSUMER.address, engine.STATUS: "40"}
    return JobRecord(run_id="r", run_status=run_status, tags={**base, **tags}, created=1.0)


def test_job_json_reports_the_results_asset() -> None:
    plain = ocean_job_json(record("STARTED"))
    assert plain["resultsDid"] == "" and "resultsAsset" not in plain
    pending = ocean_job_json(record("STARTED", **{engine.OUTPUT_REQUESTED: "1"}))
    assert pending["resultsDid"] == "" and pending["resultsAsset"]["status"] == "pending"
    # The run ended and the engine never wrote the outcome: it will never be published.
    lost = ocean_job_json(record("FAILURE", **{engine.OUTPUT_REQUESTED: "1"}))
    assert lost["resultsAsset"]["status"] == "failed" and lost["resultsAsset"]["detail"]
    outcome = json.dumps({"status": "published", "detail": "NFT and datatoken minted to the owner"})
    done = ocean_job_json(
        record(
            "SUCCESS",
            **{engine.OUTPUT_REQUESTED: "1", engine.RESULTS_DID: DID, engine.RESULTS_ASSET: outcome},
        )
    )
    assert done["resultsDid"] == DID
    assert done["resultsAsset"] == {"status": "published", "detail": "NFT and datatoken minted to the owner"}
    garbled = ocean_job_json(record("SUCCESS", **{engine.RESULTS_ASSET: "{not json"}))
    assert garbled["resultsAsset"]["status"] == "failed"


# --- over HTTP, on a real chain -------------------------------------------------------------------


@pytest.fixture
def client(dev_chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    settings = ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}",
        rpc_url=dev_chain.rpc_url,
        addresses_file=dev_chain.addresses_file,
        graphql_url="http://127.0.0.1:9/graphql",  # never reached: the request is refused first
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def start_body(output: Any, nonce: int = 2) -> dict[str, Any]:
    message = CONSUMER.address + DID + str(nonce)
    signature = CONSUMER.sign_message(encode_defunct(primitive=keccak(text=message))).signature.to_0x_hex()
    return {
        "consumerAddress": CONSUMER.address,
        "signature": signature,
        "nonce": nonce,
        "environment": "ocean-compute",
        "dataset": {"documentId": DID, "serviceId": "compute", "transferTxId": "0x" + "1" * 64},
        "algorithm": {"documentId": DID, "serviceId": "access", "transferTxId": "0x" + "2" * 64},
        "output": output,
    }


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ({"publishOutput": "true", "metadata": GOOD_METADATA}, "output.publishOutput"),
        ({"publishOutput": True, "metadata": {"name": "n" * 10_000}}, "output.metadata.name"),
        ({"publishOutput": True, "metadata": GOOD_METADATA, "owner": "0xnope"}, "output.owner"),
        ({"publishAlgorithmLog": True}, "output"),
        (json.dumps({"publishOutput": True}), "output"),
    ],
)
def test_start_refuses_a_bad_output_with_a_400_before_spending_the_nonce(
    client: TestClient, output: Any, field: str
) -> None:
    response = client.post("/api/services/compute", json=start_body(output))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == "Validation error" and body["success"] is False
    assert field in body["errors"], body
    # Nothing happened: the consumer's nonce is where it was.
    assert client.get("/api/services/nonce", params={"userAddress": CONSUMER.address}).json() == {"nonce": 1}


# --- the access routes' field rules ---------------------------------------------------------------


def test_download_and_initialize_name_their_missing_fields(client: TestClient) -> None:
    response = client.get("/api/services/download", params={"documentId": DID})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {"serviceId", "transferTxId", "consumerAddress", "nonce", "signature"} <= set(errors)
    response = client.get(
        "/api/services/initialize",
        params={"documentId": DID, "serviceId": "access", "consumerAddress": "0x12"},
    )
    assert response.status_code == 400 and "consumerAddress" in response.json()["errors"]
    response = client.get(
        "/api/services/initialize",
        params={
            "documentId": DID,
            "serviceId": "access",
            "consumerAddress": CONSUMER.address,
            "fileIndex": "x",
        },
    )
    assert response.status_code == 400 and "fileIndex" in response.json()["errors"]
    # An unknown asset: Ocean's did_not_found, and no nonce spent by an unsigned route.
    response = client.get(
        "/api/services/initialize",
        params={"documentId": DID, "serviceId": "access", "consumerAddress": CONSUMER.address},
    )
    assert response.status_code == 400 and response.json()["error"] == {"documentId": "did_not_found"}


def test_discovery_lists_initialize_and_download_and_head_is_refused(client: TestClient) -> None:
    endpoints = client.get("/").json()["serviceEndpoints"]
    assert endpoints["initialize"] == ["GET", "/api/services/initialize"]
    assert endpoints["download"] == ["GET", "/api/services/download"]
    assert client.head("/api/services/download").status_code == 405
