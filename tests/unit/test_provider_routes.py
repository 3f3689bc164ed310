"""The Provider's discovery, nonce, encrypt/decrypt and validateContainer routes over HTTP (ASGI
TestClient), with Ocean's error envelopes: every 4xx is JSON with `error` or `errors`, no URL in it.
"""

import hashlib
import json
import lzma
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

from c2d_core.crypto import decrypt_with, encrypt_for, public_key_of
from c2d_core.ocean.dids import did_for
from provider_api.errors import INTERNAL_ERROR, URL_STRIPPED, strip_urls
from provider_api.main import create_app
from provider_api.routes.root import OCEAN_ENDPOINTS
from provider_api.settings import ProviderSettings

DECRYPTER: LocalAccount = Account.from_key("0x" + "d1" * 32)
STRANGER: LocalAccount = Account.from_key("0x" + "e2" * 32)
NFT = "0x" + "5a" * 20
OTHER_NFT = "0x" + "6b" * 20
SECRET_URL = "https://data.example.com/s3cr3t-bucket-path/data.csv"


def sign(account: LocalAccount, message: str, nonce: object) -> str:
    return account.sign_message(
        encode_defunct(primitive=keccak(text=message + str(nonce)))
    ).signature.to_0x_hex()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProviderSettings:
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    return ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}", allowed_decrypters=[DECRYPTER.address]
    )


@pytest.fixture
def app(settings: ProviderSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_error_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "error" in body or "errors" in body, body
    return body


# --- discovery and nonce ---------------------------------------------------------------------------


def test_root_has_what_ocean_clients_read(client: TestClient, settings: ProviderSettings) -> None:
    body = client.get("/").json()
    assert body["software"] == "Provider" and body["version"]
    assert body["chainIds"] == [8996]
    assert body["providerAddresses"] == {"8996": settings.address}
    endpoints = body["serviceEndpoints"]
    assert set(endpoints) <= set(OCEAN_ENDPOINTS)
    for name in ("nonce", "fileinfo", "encrypt", "decrypt", "validateContainer"):
        assert name in endpoints
    assert endpoints["nonce"] == ["GET", "/api/services/nonce"]
    assert endpoints["encrypt"] == ["POST", "/api/services/encrypt"]
    assert endpoints["decrypt"] == ["POST", "/api/services/decrypt"]
    assert endpoints["fileinfo"] == ["POST", "/api/services/fileinfo"]
    assert endpoints["validateContainer"] == ["POST", "/api/services/validateContainer"]
    # every advertised endpoint is a real route: calling it never gives 404 or 405
    for name, (method, path) in endpoints.items():
        status = client.request(method, path).status_code
        assert status not in (404, 405), (name, status)


def test_nonce_starts_at_one_and_follows_signed_requests(client: TestClient) -> None:
    address = DECRYPTER.address
    assert client.get("/api/services/nonce", params={"userAddress": address}).json() == {"nonce": 1}
    assert client.get("/api/services/nonce", params={"userAddress": address.lower()}).json() == {"nonce": 1}
    decrypt_request(client, flags=0, nonce=1_700_000_000_000)
    assert client.get("/api/services/nonce", params={"userAddress": address}).json() == {
        "nonce": 1_700_000_000_000
    }


def test_nonce_needs_an_address(client: TestClient) -> None:
    body = assert_error_envelope(client.get("/api/services/nonce"), 400)
    assert body == {
        "message": "Validation error",
        "errors": {"userAddress": ["Field required"]},
        "success": False,
    }
    body = assert_error_envelope(client.get("/api/services/nonce", params={"userAddress": "bob"}), 400)
    assert list(body["errors"]) == ["userAddress"]


# --- HTTP conventions --------------------------------------------------------------------------------


def test_unknown_paths_and_methods_answer_json(client: TestClient) -> None:
    assert assert_error_envelope(client.get("/api/services/nope"), 404) == {"error": "Not Found"}
    assert assert_error_envelope(client.get("/api/services/encrypt"), 405) == {"error": "Method Not Allowed"}


@pytest.mark.parametrize(
    "path",
    ["/api/services/nonce", "/api/services/decrypt", "/api/services/compute", "/api/services/computeResult"],
)
def test_head_on_signed_routes_is_405(client: TestClient, path: str) -> None:
    response = client.head(path)
    assert response.status_code == 405


def test_malformed_json_is_a_400(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    body = assert_error_envelope(
        client.post("/api/services/decrypt", content=b'{"chainId": 89', headers=headers), 400
    )
    assert body["error"].startswith("the request body is not valid JSON")
    body = assert_error_envelope(
        client.post("/api/services/validateContainer", content=b"[1, 2]", headers=headers), 400
    )
    assert body == {"error": "the request body must be a JSON object"}


def test_cors_is_open(client: TestClient) -> None:
    response = client.get("/", headers={"Origin": "https://market.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    preflight = client.options(
        "/api/services/compute",
        headers={"Origin": "https://market.example", "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    error = client.get("/api/services/nonce", headers={"Origin": "https://market.example"})
    assert error.status_code == 400 and error.headers["access-control-allow-origin"] == "*"


def test_openapi_lists_every_route_with_a_description(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 6
    for path, method, operation in operations:
        assert operation.get("description"), f"{method.upper()} {path} has no description"
    advertised = client.get("/").json()["serviceEndpoints"]
    documented = {(method.upper(), path) for path, method, _ in operations}
    assert {tuple(value) for value in advertised.values()} <= documented


def test_unhandled_errors_are_a_fixed_500_logged_under_a_request_id(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> None:
        raise RuntimeError(f"backend at {SECRET_URL} refused; also postgresql+psycopg2://u:pw@db:5432/x")

    app.add_api_route("/boom", explode, description="test only")
    with caplog.at_level("ERROR"):
        response = client.get("/boom")
    body = assert_error_envelope(response, 500)
    request_id = response.headers["x-request-id"]
    # A fixed sentence and the id: nothing of the exception reaches the client.
    assert body == {"error": f"{INTERNAL_ERROR} (request id {request_id})", "requestId": request_id}
    assert "RuntimeError" not in response.text and "refused" not in response.text
    # logged once, under that id, with the traceback, and scrubbed of URLs
    assert request_id in caplog.text
    assert "RuntimeError" in caplog.text and URL_STRIPPED in caplog.text
    assert "s3cr3t" not in caplog.text and "u:pw" not in caplog.text


def test_strip_urls_covers_schemes_and_www() -> None:
    text = "a http://x.y/z b ipfs://Qm c www.example.org/p d s3://bucket/key e did:op:abc"
    assert (
        strip_urls(text)
        == f"a {URL_STRIPPED} b {URL_STRIPPED} c {URL_STRIPPED} d {URL_STRIPPED} e did:op:abc"
    )


def test_validation_errors_never_echo_the_input(client: TestClient) -> None:
    response = client.post(
        "/api/services/encrypt",
        params={"chainId": SECRET_URL},
        content=b"x",
        headers={"Content-Type": "application/octet-stream"},
    )
    body = assert_error_envelope(response, 400)
    assert list(body["errors"]) == ["chainId"]
    assert "s3cr3t" not in response.text and "example.com" not in response.text


# --- encrypt ----------------------------------------------------------------------------------------


def test_encrypt_answers_201_hex_that_the_provider_key_decrypts(
    client: TestClient, settings: ProviderSettings
) -> None:
    document = json.dumps({"files": [{"type": "url", "url": SECRET_URL}]}).encode()
    response = client.post(
        "/api/services/encrypt",
        params={"chainId": 8996},
        content=document,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("0x")
    assert decrypt_with(settings.private_key_hex, response.text) == document
    assert "s3cr3t" not in response.text


@pytest.mark.parametrize(
    ("params", "content_type", "content", "status", "key"),
    [
        ({"chainId": 8996}, "application/json", b'{"a": 1}', 400, "error"),
        ({"chainId": 8996}, None, b"abc", 400, "error"),
        ({}, "application/octet-stream", b"abc", 400, "errors"),
        ({"chainId": 1}, "application/octet-stream", b"abc", 400, "error"),
        ({"chainId": 8996}, "application/octet-stream", b"", 400, "error"),
    ],
)
def test_encrypt_refusals(
    client: TestClient,
    params: dict[str, Any],
    content_type: str | None,
    content: bytes,
    status: int,
    key: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = assert_error_envelope(
        client.post("/api/services/encrypt", params=params, content=content, headers=headers), status
    )
    assert key in body


@pytest.mark.parametrize(
    "chain_id", ["8_996", " 8996 ", "8996 ", "\u0668\u0669\u0669\u0666", "-8996", "1" * 30]
)
def test_encrypt_reads_chain_id_as_every_client_number(client: TestClient, chain_id: str) -> None:
    """ASCII digits only and a bounded length (params.whole_number), not int()'s "1_000" or " 12 "."""
    response = client.post(
        "/api/services/encrypt",
        params={"chainId": chain_id},
        content=b"abc",
        headers={"Content-Type": "application/octet-stream"},
    )
    body = assert_error_envelope(response, 400)
    assert list(body["errors"]) == ["chainId"], body


def test_encrypt_takes_a_chain_id_with_leading_zeros(client: TestClient) -> None:
    response = client.post(
        "/api/services/encrypt",
        params={"chainId": "08996"},
        content=b"abc",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text


# --- decrypt ----------------------------------------------------------------------------------------


def ddo_bytes(nft: str = NFT) -> bytes:
    ddo = {
        "@context": ["https://w3id.org/did/v1"],
        "id": did_for(nft, 8996),
        "version": "4.1.0",
        "services": [],
    }
    return json.dumps(ddo, separators=(",", ":")).encode()


def sealed(document: bytes, flags: int, settings: ProviderSettings) -> str:
    data = lzma.compress(document) if flags & 1 else document
    if flags & 2:
        return encrypt_for(public_key_of(settings.private_key_hex), data)
    return "0x" + data.hex()


def decrypt_request(
    client: TestClient,
    *,
    flags: int,
    nonce: int,
    document: bytes | None = None,
    signer: LocalAccount = DECRYPTER,
    nft: str = NFT,
    settings: ProviderSettings | None = None,
    **overrides: Any,
) -> httpx.Response:
    settings = settings or client.app.state.settings  # type: ignore[attr-defined]
    document = ddo_bytes(nft) if document is None else document
    body = {
        "decrypterAddress": signer.address,
        "chainId": 8996,
        "dataNftAddress": nft,
        "encryptedDocument": sealed(document, flags, settings),
        "flags": flags,
        "documentHash": "0x" + hashlib.sha256(document).hexdigest(),
        "nonce": nonce,
        "signature": sign(signer, nft + signer.address + "8996", nonce),
    }
    body.update(overrides)
    return client.post("/api/services/decrypt", json=body)


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_decrypt_returns_the_ddo_for_an_allowed_decrypter(client: TestClient, flags: int) -> None:
    response = decrypt_request(client, flags=flags, nonce=2)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == ddo_bytes()


def test_decrypt_refuses_addresses_not_on_the_allow_list(client: TestClient) -> None:
    body = assert_error_envelope(decrypt_request(client, flags=2, nonce=2, signer=STRANGER), 403)
    assert body == {"error": "Decrypter not authorized"}


def test_decrypt_is_off_when_no_decrypter_is_allowed(tmp_path: Path) -> None:
    settings = ProviderSettings(nonce_db_url=f"sqlite:///{tmp_path / 'n.db'}")
    with TestClient(create_app(settings)) as client:
        assert_error_envelope(decrypt_request(client, flags=2, nonce=2), 403)


def test_decrypt_checks_signature_and_nonce(client: TestClient) -> None:
    bad = decrypt_request(
        client, flags=2, nonce=2, signature=sign(STRANGER, NFT + DECRYPTER.address + "8996", 2)
    )
    assert assert_error_envelope(bad, 400)["errors"]["signature"]
    assert decrypt_request(client, flags=2, nonce=5).status_code == 201
    replay = assert_error_envelope(decrypt_request(client, flags=2, nonce=5), 400)
    assert replay["errors"]["signature"] == "Invalid signature expected nonce (5) > current nonce (5)."


def test_decrypt_refuses_a_wrong_document_hash(client: TestClient) -> None:
    body = assert_error_envelope(
        decrypt_request(client, flags=2, nonce=2, documentHash="0x" + "00" * 32), 400
    )
    assert "Checksum" in body["error"]


def test_decrypt_never_opens_a_service_files_blob(client: TestClient, settings: ProviderSettings) -> None:
    files = json.dumps(
        {"nftAddress": NFT, "datatokenAddress": NFT, "files": [{"type": "url", "url": SECRET_URL}]}
    )
    response = decrypt_request(client, flags=2, nonce=2, document=files.encode())
    body = assert_error_envelope(response, 400)
    assert "is not the DDO of dataNftAddress" in body["error"]
    assert "s3cr3t" not in response.text


def test_decrypt_refuses_another_nfts_ddo(client: TestClient) -> None:
    response = decrypt_request(client, flags=3, nonce=2, document=ddo_bytes(OTHER_NFT))
    assert "is not the DDO of dataNftAddress" in assert_error_envelope(response, 400)["error"]


def test_decrypt_by_transaction_id_is_not_supported_yet(client: TestClient) -> None:
    response = decrypt_request(client, flags=2, nonce=2, transactionId="0x" + "ab" * 32)
    assert "not supported" in assert_error_envelope(response, 400)["error"]
    # refused before the signature is checked: the nonce is still unspent
    assert client.get("/api/services/nonce", params={"userAddress": DECRYPTER.address}).json() == {"nonce": 1}


def test_decrypt_names_missing_fields(client: TestClient) -> None:
    body = assert_error_envelope(client.post("/api/services/decrypt", json={"chainId": 8996}), 400)
    assert {"decrypterAddress", "nonce", "signature"} <= set(body["errors"])
    response = decrypt_request(client, flags=2, nonce=2, encryptedDocument=None, documentHash="")
    assert set(assert_error_envelope(response, 400)["errors"]) == {"encryptedDocument", "documentHash"}


def test_decrypt_refuses_an_unknown_chain_and_damaged_ciphertext(client: TestClient) -> None:
    assert (
        "Unsupported chain ID"
        in assert_error_envelope(decrypt_request(client, flags=2, nonce=2, chainId=1), 400)["error"]
    )
    damaged = decrypt_request(client, flags=2, nonce=3, encryptedDocument="0x" + "04" * 120)
    assert assert_error_envelope(damaged, 400)["error"].startswith("Failed to decrypt")


# --- validateContainer ---------------------------------------------------------------------------------


def test_validate_container(client: TestClient) -> None:
    good = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11", "checksum": "sha256:" + "a" * 64}
    response = client.post("/api/services/validateContainer", json=good)
    assert response.status_code == 200 and response.json() == good
    missing = client.post("/api/services/validateContainer", json={**good, "checksum": ""})
    assert assert_error_envelope(missing, 400) == {"error": "missing_entrypoint_image_checksum"}
    prefix = client.post("/api/services/validateContainer", json={**good, "checksum": "md5:abc"})
    assert assert_error_envelope(prefix, 400) == {"error": "checksum_prefix"}
    assert_error_envelope(client.post("/api/services/validateContainer"), 400)
