"""Request signatures as Ocean's clients make them, and the check every signed route runs.

A client signs, with EIP-191 `personal_sign`, the 32-byte keccak of `message + nonce` (not the text
itself); `message` is the route's concatenation of fields exactly as sent (see the reference, §3):

    computeStart            consumerAddress + dataset.documentId
    computeStop / Delete    consumerAddress + jobId + documentId
    computeResult           consumerAddress + jobId + index
    download                documentId
    decrypt                 (transactionId or dataNftAddress) + decrypterAddress + chainId
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address, keccak, to_checksum_address

from provider_api.errors import backend_error, field_errors
from provider_api.nonces import NonceError, NonceStore, NonceStoreUnavailable, parse_nonce

INVALID_SIGNATURE = "Invalid signature provided. Please check the nonce or documentId."


class SignatureError(ValueError):
    """The signature could not be read or recovered; the message says why, for the consumer."""


def message_hash(message: str) -> bytes:
    """keccak256 of the UTF-8 message: the 32 bytes the client `personal_sign`s."""
    return keccak(text=message)


def nonce_text(nonce: object) -> str:
    """The nonce as it appears in the signed text: as sent, integers without a decimal point."""
    if isinstance(nonce, float) and nonce.is_integer():
        return str(int(nonce))  # what JavaScript's String(n) gives for a whole number
    return str(nonce)


def _signature_bytes(signature: str) -> bytes:
    text = signature.strip()
    text = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SignatureError("the signature is not hex") from None
    if len(raw) != 65:
        raise SignatureError(f"the signature must be 65 bytes (r, s, v), got {len(raw)}")
    v = raw[64]
    if v in (0, 1):  # ocean.py 3.x sends the bare recovery id
        v += 27
    if v not in (27, 28):
        raise SignatureError("the signature's v byte must be 0, 1, 27 or 28")
    return raw[:64] + bytes([v])


def recover_signer(message: str, nonce: object, signature: str) -> str:
    """The checksum address that signed keccak(utf8(message + nonce)) with personal_sign."""
    signable = encode_defunct(primitive=message_hash(message + nonce_text(nonce)))
    try:
        return str(Account.recover_message(signable, signature=_signature_bytes(signature)))
    except SignatureError:
        raise
    except Exception:
        # eth_keys raises assorted errors for r/s values off the curve; all mean the same to a client.
        raise SignatureError("the signature does not recover to any address") from None


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
