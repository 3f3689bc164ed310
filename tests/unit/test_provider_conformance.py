"""Wire conformance and hardening (issue 12): odd numbers, unbounded ids and echoes, the catch-all.

Over HTTP (ASGI TestClient) against the Provider app. Dagster's GraphQL address is a closed loopback
port, so any request that reached a job lookup would be a 503: a 400 here proves the input was
refused before any lookup. Routes whose dependencies connect to the chain run against the session's
real anvil (`dev_chain`). The agreement-id forms of real jobs are tested end to end in
tests/e2e/test_ocean_js_wire.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from fastapi import FastAPI
from fastapi.testclient import TestClient

from c2d_core.results import LocalResultStore, ResultEntry
from c2d_core.workflow import JOB_ID_PATTERN, canonical_tx_id
from provider_api.errors import INTERNAL_ERROR, MAX_ERROR_TEXT, OceanHTTPError, echo, scrub
from provider_api.main import create_app
from provider_api.nonces import NonceError, parse_nonce
from provider_api.params import NumberError, whole_number
from provider_api.result_files import stream_entry
from provider_api.settings import ProviderSettings

CONSUMER: LocalAccount = Account.from_key("0x" + "c3" * 32)
JOB_ID = "0123456789abcdef0123456789abcdef"
DID = "did:op:" + "1" * 64
TX = "0x" + "ab" * 32
CLOSED_GRAPHQL = "http://127.0.0.1:9/graphql"  # the discard port: nothing listens on loopback there
SUPERSCRIPT_TWO = "\u00b2"  # '²': str.isdigit() is True, int() raises
ARABIC_ONE = "\u0661"  # Arabic-Indic digit one: int() reads it as 1
ODD_NUMBERS = [SUPERSCRIPT_TWO, ARABIC_ONE, "9" * 5000, "1_0", " 1", "+1", "1.0", "0x1", "-1"]
HUGE = "f" * (1024 * 1024)  # a 1 MiB value (in JSON bodies: httpx caps a query at 64 KiB)
LONG = "f" * 60_000  # about the longest that fits a query string


def sign(account: LocalAccount, message: str) -> str:
    return account.sign_message(encode_defunct(primitive=keccak(text=message))).signature.to_0x_hex()


def settings_for(tmp_path: Path, **extra: Any) -> ProviderSettings:
    return ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}", graphql_url=CLOSED_GRAPHQL, **extra
    )


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    return create_app(settings_for(tmp_path))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def chain_client(dev_chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app on the real local chain: the access and initializeCompute routes connect to it."""
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    settings = settings_for(tmp_path, rpc_url=dev_chain.rpc_url, addresses_file=dev_chain.addresses_file)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def field_error(response: httpx.Response, field: str) -> str:
    """The 400 field error for `field`, after checking Ocean's shape and that the body stayed small."""
    assert response.status_code == 400, response.text[:500]
    assert len(response.content) < 2048, len(response.content)
    body = response.json()
    assert body["message"] == "Validation error" and body["success"] is False, body
    assert field in body["errors"], body
    message = body["errors"][field]
    return " ".join(message) if isinstance(message, list) else str(message)


def nonce_of(client: TestClient, address: str) -> int:
    return int(client.get("/api/services/nonce", params={"userAddress": address}).json()["nonce"])


def result_params(index: str, nonce: str = "5", job_id: str = JOB_ID) -> dict[str, str]:
    """A computeResult query signed as Ocean's clients sign it: the index and nonce as sent."""
    message = CONSUMER.address + job_id + index + nonce
    return {
        "consumerAddress": CONSUMER.address,
        "jobId": job_id,
        "index": index,
        "nonce": nonce,
        "signature": sign(CONSUMER, message),
    }


# --- item 2: one number parser, ASCII digits only, bounded ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"), [("0", 0), ("7", 7), ("007", 7), (3, 3), ("999999999", 999999999)]
)
def test_whole_number_reads_ascii_digits_and_json_integers(text: object, number: int) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("text", [*ODD_NUMBERS, "", True, -1, 10**9, 1.0, None, "12\n"])
def test_whole_number_refuses_everything_else(text: object) -> None:
    with pytest.raises(NumberError) as caught:
        whole_number(text)
    assert len(str(caught.value)) < 80  # says what is allowed, never repeats the value


@pytest.mark.parametrize("index", ODD_NUMBERS)
def test_compute_result_refuses_an_odd_index_before_anything(client: TestClient, index: str) -> None:
    """`²` and 5,000 digits used to pass `isdigit()` and crash `int()` (a 503 quoting Python);
    U+0661 passed both and served result 1. Now each is a 400 and the nonce is not spent."""
    response = client.get("/api/services/computeResult", params=result_params(index))
    field_error(response, "index")
    assert "Traceback" not in response.text and "ValueError" not in response.text
    assert nonce_of(client, CONSUMER.address) == 1


@pytest.mark.parametrize("nonce", [ARABIC_ONE + "00", SUPERSCRIPT_TWO, "1_000", "9" * 5000])
def test_a_signature_over_an_odd_nonce_is_refused(client: TestClient, nonce: str) -> None:
    """Decimal() reads U+0661 U+0660 U+0660 as 100: a correctly signed request with it used to pass."""
    response = client.get("/api/services/computeResult", params=result_params("0", nonce=nonce))
    field_error(response, "nonce")
    assert nonce_of(client, CONSUMER.address) == 1


def test_parse_nonce_takes_ascii_forms_only() -> None:
    assert parse_nonce("12") == 12 and parse_nonce(12) == 12 and parse_nonce("12.0") == 12
    for odd in (ARABIC_ONE, "1_0", SUPERSCRIPT_TWO, "\uff11"):  # the last is a fullwidth digit one
        with pytest.raises(NonceError):
            parse_nonce(odd)


def _header_bytes(value: str) -> bytes:
    # Latin-1 where it can be (the server decodes headers so: byte 0xB2 arrives as '²'), else UTF-8.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


@pytest.mark.parametrize("header", [SUPERSCRIPT_TWO, ARABIC_ONE, "-5", "9" * 5000])
def test_an_odd_content_length_is_a_400(client: TestClient, header: str) -> None:
    # Built by hand: the declared length is the test's point, and a client library would fix it.
    request = httpx.Request(
        "POST",
        "http://testserver/api/services/initializeCompute",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": _header_bytes(header)},
    )
    response = client.send(request)
    assert response.status_code == 400, response.text[:300]
    assert "error" in response.json() and len(response.content) < 1024


def _stored_result(tmp_path: Path) -> tuple[LocalResultStore, ResultEntry]:
    store = LocalResultStore(tmp_path / "results")
    stored = store.put(JOB_ID, "out.txt", io.BytesIO(b"0123456789"))
    entry = ResultEntry(
        index=0,
        filename="out.txt",
        filesize=10,
        type="output",
        sha256=stored.sha256,
        location=stored.location,
    )
    return store, entry


@pytest.mark.parametrize(
    "header",
    [f"bytes={'9' * 5000}-", f"bytes=-{'9' * 5000}", f"bytes={ARABIC_ONE}-", f"bytes=0-{SUPERSCRIPT_TWO}"],
)
def test_an_odd_range_position_is_a_400(tmp_path: Path, header: str) -> None:
    """Over HTTP in tests/e2e/test_ocean_js_wire.py; here the streaming code on a real local store."""
    store, entry = _stored_result(tmp_path)
    with pytest.raises(OceanHTTPError) as caught:
        stream_entry(store, entry, header)
    assert caught.value.status_code == 400 and "Range" in caught.value.body["error"]


def test_good_ranges_still_work(tmp_path: Path) -> None:
    store, entry = _stored_result(tmp_path)
    response = stream_entry(store, entry, "bytes=2-4")
    assert response.status_code == 206 and response.headers["content-range"] == "bytes 2-4/10"
    with pytest.raises(OceanHTTPError) as caught:
        stream_entry(store, entry, "bytes=20-")
    assert caught.value.status_code == 416


@pytest.mark.parametrize("index", [SUPERSCRIPT_TWO, ARABIC_ONE, "9" * 5000])
def test_initialize_and_download_refuse_an_odd_file_index(chain_client: TestClient, index: str) -> None:
    common = {
        "documentId": DID,
        "serviceId": "access",
        "consumerAddress": CONSUMER.address,
        "fileIndex": index,
    }
    field_error(chain_client.get("/api/services/initialize", params=common), "fileIndex")
    signed = {**common, "transferTxId": TX, "nonce": "5", "signature": sign(CONSUMER, DID + "5")}
    field_error(chain_client.get("/api/services/download", params=signed), "fileIndex")
    assert nonce_of(chain_client, CONSUMER.address) == 1


def test_initialize_compute_refuses_an_unbounded_valid_until(chain_client: TestClient) -> None:
    body = {
        "datasets": [{"documentId": DID, "serviceId": "compute"}],
        "algorithm": {"meta": {"rawcode": "print(1)", "container": {}}},
        # 4,000 digits: under Python's int() limit, so pydantic's own int took it.
        "compute": {"env": "ocean-compute", "validUntil": "9" * 4000},
        "consumerAddress": CONSUMER.address,
    }
    field_error(chain_client.post("/api/services/initializeCompute", json=body), "compute.validUntil")


def test_compute_environments_refuses_an_odd_chain_id(chain_client: TestClient) -> None:
    for chain_id in (SUPERSCRIPT_TWO, "9" * 5000, "x" * 60_000):
        field_error(
            chain_client.get("/api/services/computeEnvironments", params={"chainId": chain_id}), "chainId"
        )
    # Another chain is still an empty list under its id, as Ocean answers it.
    assert chain_client.get("/api/services/computeEnvironments", params={"chainId": "1"}).json() == {"1": []}


# --- item 2: the catch-all never quotes an exception; 503 only for a backend that is down ----------


def test_an_unhandled_bug_is_a_fixed_500(app: FastAPI, client: TestClient) -> None:
    def crash() -> None:
        int(SUPERSCRIPT_TWO)  # what odd numbers used to do deep inside a route

    app.add_api_route("/crash", crash, description="test only")
    response = client.get("/crash")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "error": f"{INTERNAL_ERROR} (request id {request_id})",
        "requestId": request_id,
    }
    assert "invalid literal" not in response.text and "ValueError" not in response.text


def test_an_unreachable_chain_is_still_a_503(app: FastAPI, client: TestClient) -> None:
    import requests

    def chain_down() -> None:
        raise requests.ConnectionError("HTTPConnectionPool(host='10.1.2.3', port=8545): refused")

    app.add_api_route("/chain-down", chain_down, description="test only")
    response = client.get("/chain-down")
    assert response.status_code == 503
    body = response.json()
    assert body["error"].startswith("the chain is unavailable") and body["requestId"]
    assert "10.1.2.3" not in response.text and "8545" not in response.text


# --- item 3: ids checked before any lookup, no unbounded echo -----------------------------------------


@pytest.mark.parametrize("job_id", [HUGE, JOB_ID + "\n", JOB_ID.upper(), "x", "../../etc", JOB_ID + "0"])
def test_status_checks_the_job_id_before_any_lookup(client: TestClient, job_id: str) -> None:
    """A 1 MiB jobId used to come back inside a 1 MiB 404 body."""
    # Parameters in a JSON body when the query is empty (Ocean's rule), as in the reported case.
    body = json.dumps({"consumerAddress": CONSUMER.address, "jobId": job_id})
    response = client.request("GET", "/api/services/compute", content=body)
    field_error(response, "jobId")
    assert "ffffffffffffffffffffffffffffffffffffffff" not in response.text
    query = {"consumerAddress": CONSUMER.address, "jobId": LONG}
    field_error(client.get("/api/services/compute", params=query), "jobId")


def test_the_job_id_pattern_is_the_one_jobs_are_created_with() -> None:
    import uuid

    assert JOB_ID_PATTERN.match(uuid.uuid4().hex)
    assert not JOB_ID_PATTERN.match(uuid.uuid4().hex + "\n")


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_stop_and_delete_check_the_job_id_before_the_signature(client: TestClient, method: str) -> None:
    nonce = "5"
    body = {
        "consumerAddress": CONSUMER.address,
        "jobId": HUGE,
        "nonce": nonce,
        "signature": sign(CONSUMER, CONSUMER.address + HUGE + nonce),
    }
    response = client.request(method, "/api/services/compute", json=body)
    field_error(response, "jobId")
    assert nonce_of(client, CONSUMER.address) == 1


def test_compute_result_checks_the_job_id_before_the_signature(client: TestClient) -> None:
    response = client.request("GET", "/api/services/computeResult", json=result_params("0", job_id=HUGE))
    field_error(response, "jobId")
    assert nonce_of(client, CONSUMER.address) == 1


def test_an_agreement_id_alone_is_checked_before_any_lookup(client: TestClient) -> None:
    for agreement in (HUGE, "0x1234", "zz" * 32, TX + "\n"):
        params = {"consumerAddress": CONSUMER.address, "agreementId": agreement}
        field_error(client.request("GET", "/api/services/compute", json=params), "agreementId")


def test_encrypt_does_not_echo_an_unbounded_chain_id(client: TestClient) -> None:
    response = client.post(
        "/api/services/encrypt",
        params={"chainId": "9" * 4000},  # pydantic reads it; the message used to quote it whole
        content=b"x",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 400 and len(response.content) < 1024, response.text[:300]


def test_a_huge_unknown_key_is_not_echoed_as_a_field_name(client: TestClient) -> None:
    # validUntil's rule names the field; the body's own keys never come back at full length.
    response = client.post("/api/services/decrypt", json={"k" * 100_000: 1})
    assert response.status_code == 400 and len(response.content) < 4096, len(response.content)


def test_echo_quotes_a_short_printable_prefix() -> None:
    assert echo("access") == "access"
    assert echo("a\x00b\nc\u202ed") == "a?b?c?d"
    quoted = echo("x" * 1_000_000)
    assert quoted.startswith("x" * 40) and quoted.endswith("(1000000 characters)") and len(quoted) < 80


def test_every_error_string_is_bounded() -> None:
    body = scrub({"error": "y" * 100_000, "errors": {"f": ["z" * 100_000]}})
    assert len(json.dumps(body)) < 3 * MAX_ERROR_TEXT


# --- item 1: one canonical form for transaction hashes ------------------------------------------------


@pytest.mark.parametrize("form", [TX, TX[2:], TX.upper(), "0X" + TX[2:].upper(), TX[2:].upper()])
def test_every_spelling_of_a_transaction_hash_has_one_canonical_form(form: str) -> None:
    assert canonical_tx_id(form) == TX


@pytest.mark.parametrize(
    "odd", [TX + "\n", TX[:-1], TX + "0", "0x" + "g" * 64, "", None, 12, "0x0x" + TX[2:]]
)
def test_what_is_not_a_transaction_hash_has_no_canonical_form(odd: object) -> None:
    assert canonical_tx_id(odd) is None
