"""ECIES on secp256k1, byte-compatible with Ocean's Provider (`ecies.encrypt(public_key_hex, data)`).

Used to read a DDO's encrypted `files` blob, whose plaintext holds the data publisher's file
locations: error messages here describe the blob's shape, never its content.
"""

from __future__ import annotations

import json
from typing import Any

import coincurve
import ecies
from ecies.config import Config

# Pinned rather than ecies.ECIES_CONFIG (a mutable global): these are the settings Ocean's Provider and
# ocean.js use (uncompressed ephemeral key, HKDF over uncompressed points, AES-256-GCM, 16-byte nonce).
OCEAN_ECIES = Config(
    elliptic_curve="secp256k1",
    is_ephemeral_key_compressed=False,
    is_hkdf_key_compressed=False,
    symmetric_algorithm="aes-256-gcm",
    symmetric_nonce_length=16,
)


class CryptoError(Exception):
    """Decryption or key handling failed; the message is safe to log (no plaintext, no key)."""


def _hex_bytes(value: str, what: str) -> bytes:
    text = value.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CryptoError(f"{what} is not a hex string") from None


def _private_key(private_key_hex: str) -> coincurve.PrivateKey:
    secret = _hex_bytes(private_key_hex, "the private key")
    if len(secret) != 32:
        raise CryptoError("the private key must be 32 bytes (64 hex characters)")
    try:
        return coincurve.PrivateKey(secret)
    except ValueError:
        raise CryptoError("the private key is not a valid secp256k1 key") from None


def public_key_of(private_key_hex: str) -> str:
    """The public key as Ocean (eth_keys `PublicKey.to_hex()`) prints it: 0x + 64 bytes, no 04 prefix."""
    point = _private_key(private_key_hex).public_key.format(compressed=False)
    return "0x" + point[1:].hex()


def encrypt_for(public_key_hex: str, data: bytes) -> str:
    """Encrypt `data` to a public key (64-byte Ethereum form, or 33/65-byte SEC1); returns 0x-hex."""
    key = _hex_bytes(public_key_hex, "the public key")
    if len(key) == 64:
        key = b"\x04" + key
    try:
        coincurve.PublicKey(key)
    except ValueError:
        raise CryptoError("the public key is not a valid secp256k1 point") from None
    # As Ocean's Provider answers /api/services/encrypt: Web3.to_hex(ecies.encrypt(...)).
    return "0x" + ecies.encrypt(key, data, OCEAN_ECIES).hex()


def decrypt_with(private_key_hex: str, hex_str: str) -> bytes:
    key = _private_key(private_key_hex)
    blob = _hex_bytes(hex_str, "the encrypted document")
    if len(blob) <= 65 + 16 + 16:
        raise CryptoError("the encrypted document is too short to be ECIES")
    try:
        return ecies.decrypt(key.secret, blob, OCEAN_ECIES)
    except Exception:
        # Wrong key and tampered data both end here (AES-GCM tag mismatch); their text says nothing useful.
        raise CryptoError(
            "could not decrypt the encrypted document: it was not encrypted to this key or is damaged"
        ) from None


def _same_address(a: object, b: str) -> bool:
    return isinstance(a, str) and a.lower() == b.lower()


def decrypt_service_files(
    private_key_hex: str,
    encrypted_hex: str,
    *,
    expected_nft_address: str | None = None,
    expected_datatoken_address: str | None = None,
) -> list[dict[str, Any]]:
    """Decrypt a DDO service's `files` into its file objects.

    The plaintext is Ocean's `{"nftAddress", "datatokenAddress", "files": [{...}, ...]}`. Given the
    addresses the DDO claims, check them as Ocean's Provider does, so a blob copied from another asset
    is refused rather than served.
    """
    plaintext = decrypt_with(private_key_hex, encrypted_hex)
    try:
        document = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CryptoError("the decrypted files document is not JSON") from None
    if not isinstance(document, dict):
        raise CryptoError("the decrypted files document is not an object with 'files'")
    files = document.get("files")
    if not isinstance(files, list) or not files:
        raise CryptoError("the decrypted files document has no 'files' list, or it is empty")
    for index, item in enumerate(files):
        if not isinstance(item, dict):
            raise CryptoError(f"file {index} of the decrypted files document is not an object")
        if not isinstance(item.get("type", "url"), str):
            raise CryptoError(f"file {index} of the decrypted files document has a non-text 'type'")
    if expected_nft_address is not None and not _same_address(
        document.get("nftAddress"), expected_nft_address
    ):
        raise CryptoError("the decrypted files belong to another NFT than the DDO's")
    if expected_datatoken_address is not None and not _same_address(
        document.get("datatokenAddress"), expected_datatoken_address
    ):
        raise CryptoError("the decrypted files belong to another datatoken than the service's")
    return files
