"""The texts Ocean's consumers sign and how they sign them, for both sides: the client that signs
(c2d_cli/provider_client.py) and the Provider that checks (provider_api/auth.py).

A client signs, with EIP-191 `personal_sign`, the 32-byte keccak of `message + nonce` (not the text
itself); `message` is the route's concatenation of fields exactly as sent, no separators:

    computeStart            consumerAddress + dataset.documentId
    computeStop / Delete    consumerAddress + jobId + documentId
    computeResult           consumerAddress + jobId + index
    computeStreamableLogs   consumerAddress + jobId
    download                documentId
    decrypt                 (transactionId or dataNftAddress) + decrypterAddress + chainId
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


class SignatureError(ValueError):
    """The signature could not be read or recovered; the message says why, for the consumer."""


# --- the messages ---------------------------------------------------------------------------------


def compute_start_message(consumer_address: str, document_id: str) -> str:
    return consumer_address + document_id


def compute_stop_message(consumer_address: str, job_id: str, document_id: str) -> str:
    """What computeStop and computeDelete sign (an absent documentId is `""`)."""
    return consumer_address + job_id + document_id


def compute_result_message(consumer_address: str, job_id: str, index: str | int) -> str:
    return consumer_address + job_id + str(index)


def compute_streamable_logs_message(consumer_address: str, job_id: str) -> str:
    """What computeStreamableLogs signs (Ocean Node's live algorithm log)."""
    return consumer_address + job_id


def download_message(document_id: str) -> str:
    return document_id


def decrypt_message(nft_or_transaction: str, decrypter_address: str, chain_id: str) -> str:
    """What `decrypt` signs: the data NFT's address (or the transaction id), the decrypter, the chain id
    (a JSON number signs as its digits)."""
    return nft_or_transaction + decrypter_address + chain_id


# --- signing and recovering -----------------------------------------------------------------------


def message_hash(message: str) -> bytes:
    """keccak256 of the UTF-8 message: the 32 bytes the client `personal_sign`s."""
    return keccak(text=message)


def nonce_text(nonce: object) -> str:
    """The nonce as it appears in the signed text: as sent, integers without a decimal point."""
    if isinstance(nonce, float) and nonce.is_integer():
        return str(int(nonce))  # what JavaScript's String(n) gives for a whole number
    return str(nonce)


def sign_text(account: LocalAccount, text: str) -> str:
    """A client's signature of `text` (message and nonce already joined): 0x-hex r‖s‖v, v 27 or 28."""
    signed = Account.sign_message(encode_defunct(primitive=message_hash(text)), account.key)
    return "0x" + bytes(signed.signature).hex().removeprefix("0x")


def sign_request(account: LocalAccount, message: str, nonce: object) -> str:
    """A client's signature of a route's `message` with this `nonce`."""
    return sign_text(account, message + nonce_text(nonce))


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
