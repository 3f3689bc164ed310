"""Request signatures made exactly as ocean.py / ocean.js make them, checked by verify_request.

Clients: `sign_message(encode_defunct(primitive=keccak(text=message + nonce)))` (personal_sign over
the 32-byte hash). ocean.py 3.x sends v as 0/1, ocean.js as 27/28.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from c2d_core.ocean.signing import message_hash, recover_signer
from provider_api.auth import verify_request
from provider_api.errors import OceanHTTPError
from provider_api.nonces import NonceStore

CONSUMER: LocalAccount = Account.from_key("0x" + "a1" * 32)
OTHER: LocalAccount = Account.from_key("0x" + "b2" * 32)
DID = "did:op:" + "ab" * 32
JOB_ID = "0123456789abcdef0123456789abcdef"


def sign(account: LocalAccount, message: str, nonce: object) -> str:
    """What ocean.py's `sign_message` and ocean.js's `signRequest` produce (v = 27/28)."""
    signed = account.sign_message(encode_defunct(primitive=keccak(text=message + str(nonce))))
    return signed.signature.to_0x_hex()


def with_v_as_recovery_id(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    return "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NonceStore]:
    nonce_store = NonceStore(f"sqlite:///{tmp_path / 'nonces.db'}")
    yield nonce_store
    nonce_store.dispose()


def errors_of(caught: pytest.ExceptionInfo[OceanHTTPError]) -> dict[str, object]:
    assert caught.value.status_code == 400
    body = caught.value.body
    assert body["message"] == "Validation error" and body["success"] is False
    errors: dict[str, object] = body["errors"]
    return errors


def test_message_hash_is_keccak_of_utf8() -> None:
    assert message_hash("abc") == keccak(b"abc")
    assert message_hash("é") == keccak("é".encode())


@pytest.mark.parametrize(
    "message",
    [
        CONSUMER.address + DID,  # computeStart
        CONSUMER.address + JOB_ID + DID,  # computeStop / computeDelete
        CONSUMER.address + JOB_ID + "0",  # computeResult
        DID,  # download
        "0x" + "12" * 20 + CONSUMER.address + "8996",  # decrypt
    ],
)
def test_recover_signer_for_each_route_message(message: str) -> None:
    signature = sign(CONSUMER, message, 5)
    assert recover_signer(message, 5, signature) == CONSUMER.address
    assert recover_signer(message, "5", with_v_as_recovery_id(signature)) == CONSUMER.address
    # the text, not only the address, is bound: another message recovers someone else
    assert recover_signer(message + "x", 5, signature) != CONSUMER.address


def test_valid_signature_passes_and_spends_the_nonce(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    verify_request(store, CONSUMER.address, message, 2, sign(CONSUMER, message, 2))
    assert store.current(CONSUMER.address) == 2


def test_v_as_0_or_1_passes(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    signature = with_v_as_recovery_id(sign(CONSUMER, message, 3))
    assert signature[-2:] in ("00", "01")
    verify_request(store, CONSUMER.address, message, 3, signature)


def test_address_case_does_not_matter_for_the_signer(store: NonceStore) -> None:
    message = CONSUMER.address.lower() + DID  # the message is what the client sent, as sent
    verify_request(store, CONSUMER.address.lower(), message, 4, sign(CONSUMER, message, 4))


def test_wrong_signer_is_refused_and_spends_nothing(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, CONSUMER.address, message, 2, sign(OTHER, message, 2))
    assert errors_of(caught) == {
        "signature": ["Invalid signature provided. Please check the nonce or documentId."]
    }
    assert store.current(CONSUMER.address) == 1


def test_signature_over_another_nonce_is_refused(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, CONSUMER.address, message, 3, sign(CONSUMER, message, 2))
    assert "signature" in errors_of(caught)


def test_same_nonce_twice_is_refused(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    signature = sign(CONSUMER, message, 7)
    verify_request(store, CONSUMER.address, message, 7, signature)
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, CONSUMER.address, message, 7, signature)
    assert errors_of(caught) == {"signature": "Invalid signature expected nonce (7) > current nonce (7)."}


def test_lower_nonce_is_refused(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    verify_request(
        store, CONSUMER.address, message, 1_700_000_000_000, sign(CONSUMER, message, 1_700_000_000_000)
    )
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, CONSUMER.address, message, 5, sign(CONSUMER, message, 5))
    assert errors_of(caught) == {
        "signature": "Invalid signature expected nonce (5) > current nonce (1700000000000)."
    }


@pytest.mark.parametrize("nonce", ["abc", "1.5", "-2", "0x10"])
def test_non_numeric_nonce_is_refused_before_any_signature_work(store: NonceStore, nonce: str) -> None:
    message = CONSUMER.address + DID
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, CONSUMER.address, message, nonce, sign(CONSUMER, message, nonce))
    assert list(errors_of(caught)) == ["nonce"]


def test_truncated_or_garbled_signatures_are_refused(store: NonceStore) -> None:
    message = CONSUMER.address + DID
    signature = sign(CONSUMER, message, 2)
    for bad in (signature[:-2], signature[:66], "0x", "0xzz" + signature[4:], signature[:-2] + "05"):
        with pytest.raises(OceanHTTPError) as caught:
            verify_request(store, CONSUMER.address, message, 2, bad)
        reasons = errors_of(caught)["signature"]
        assert isinstance(reasons, list) and reasons[0].startswith("Invalid signature provided.")
    assert store.current(CONSUMER.address) == 1


def test_missing_fields_are_named(store: NonceStore) -> None:
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, None, "m", None, "")
    assert set(errors_of(caught)) == {"consumerAddress", "nonce", "signature"}
    with pytest.raises(OceanHTTPError) as caught:
        verify_request(store, "0x1234", "m", 2, "0x00", address_field="decrypterAddress")
    assert set(errors_of(caught)) == {"decrypterAddress"}
