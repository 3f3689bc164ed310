"""c2d_core.ocean: the signed texts both sides build, the client's signature the Provider's check accepts, and
the metadata state names."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from c2d_core.ocean.metadata_states import CONSUMABLE_STATES, MetadataState, state_label
from c2d_core.ocean.signing import (
    compute_result_message,
    compute_start_message,
    compute_stop_message,
    decrypt_message,
    download_message,
    nonce_text,
    recover_signer,
    sign_request,
    sign_text,
)

CONSUMER: LocalAccount = Account.from_key("0x" + "a1" * 32)
DID = "did:op:" + "ab" * 32
JOB_ID = "0123456789abcdef0123456789abcdef"
NFT = "0x" + "12" * 20


def test_each_route_signs_its_fields_joined_without_separators() -> None:
    # The concatenations of the Ocean Provider's reference (§3), fields exactly as sent.
    address = CONSUMER.address
    assert compute_start_message(address, DID) == address + DID
    assert compute_stop_message(address, JOB_ID, DID) == address + JOB_ID + DID
    assert compute_stop_message(address, JOB_ID, "") == address + JOB_ID
    assert compute_result_message(address, JOB_ID, 3) == address + JOB_ID + "3"
    assert compute_result_message(address, JOB_ID, "3") == address + JOB_ID + "3"
    assert download_message(DID) == DID
    assert decrypt_message(NFT, address, "8996") == NFT + address + "8996"


def test_a_client_signature_is_personal_sign_over_the_keccak_of_message_and_nonce() -> None:
    message = compute_start_message(CONSUMER.address, DID)
    expected = CONSUMER.sign_message(
        encode_defunct(primitive=keccak(text=message + "7"))
    ).signature.to_0x_hex()
    assert sign_request(CONSUMER, message, 7) == expected
    assert sign_text(CONSUMER, message + "7") == expected


@pytest.mark.parametrize("nonce", [7, "7", 7.0])
def test_what_the_client_signs_the_provider_recovers(nonce: object) -> None:
    message = compute_result_message(CONSUMER.address, JOB_ID, 0)
    assert recover_signer(message, nonce, sign_request(CONSUMER, message, nonce)) == CONSUMER.address
    assert recover_signer(message, 8, sign_request(CONSUMER, message, nonce)) != CONSUMER.address


def test_a_whole_float_nonce_signs_as_javascript_prints_it() -> None:
    assert (nonce_text(7.0), nonce_text(7.5), nonce_text("007")) == ("7", "7.5", "007")


def test_metadata_states_and_which_may_be_used() -> None:
    assert [state.value for state in MetadataState] == [0, 1, 2, 3, 4, 5]
    assert [state_label(value) for value in range(7)] == [
        "active",
        "end of life",
        "deprecated",
        "revoked",
        "ordering disabled",
        "unlisted",
        "unknown",
    ]
    assert {0, 5} == CONSUMABLE_STATES
    assert all(state not in CONSUMABLE_STATES for state in (1, 2, 3, 4))
