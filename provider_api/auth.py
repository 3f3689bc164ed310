"""The check every signed route runs: the signature over the route's message and nonce, then the nonce spent.

The messages and how clients sign them are c2d_core/ocean/signing.py (one definition for both sides).
"""

from __future__ import annotations

from eth_utils import is_address, to_checksum_address

from c2d_core.ocean.signing import SignatureError, recover_signer
from provider_api.errors import backend_error, field_errors
from provider_api.nonces import NonceError, NonceStore, NonceStoreUnavailable, parse_nonce

INVALID_SIGNATURE = "Invalid signature provided. Please check the nonce or documentId."


def verify_request(
    store: NonceStore,
    address: object,
    message: str,
    nonce: object,
    signature: object,
    *,
    address_field: str = "consumerAddress",
) -> None:
    """Check that `address` signed `message + nonce`, then advance its nonce (atomic, before any
    side effect of the route). Raises OceanHTTPError 400 in Ocean's `errors` shape, 503 if the nonce
    store is down."""
    missing = {
        name: [f"The {name} field is required."]
        for name, value in ((address_field, address), ("nonce", nonce), ("signature", signature))
        if value is None or value == ""
    }
    if missing:
        raise field_errors(missing)
    if not isinstance(address, str) or not is_address(address):
        raise field_errors({address_field: [f"The {address_field} must be a 0x address (40 hex digits)."]})
    if not isinstance(signature, str):
        raise field_errors({"signature": ["The signature must be 0x-hex text."]})
    try:
        parse_nonce(nonce)
    except NonceError as error:
        raise field_errors({"nonce": [error.message]}) from None
    try:
        signer = recover_signer(message, nonce, signature)
    except SignatureError as error:
        raise field_errors({"signature": [f"{INVALID_SIGNATURE} ({error})"]}) from None
    if signer != to_checksum_address(address):
        raise field_errors({"signature": [INVALID_SIGNATURE]})
    try:
        store.advance(address, nonce)
    except NonceError as error:
        raise field_errors({"signature": error.message}) from None
    except NonceStoreUnavailable as error:
        raise backend_error(str(error)) from None
