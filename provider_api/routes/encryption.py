"""`encrypt` (ECIES to the provider key, how publishers hide file locations in a DDO) and `decrypt`
(a DDO for an allowed indexer, after a signature check).

Decrypt hands back plaintext of anything encrypted to this key, so it is deny-by-default: only
addresses in `allowed_decrypters`, and only documents that are the DDO of the NFT the request names.
A service's `files` blob (the data publisher's secret) never comes back, whoever asks.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from typing import Annotated, Any

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from c2d_core.crypto import CryptoError, decrypt_with, encrypt_for, public_key_of
from c2d_core.ocean.dids import did_for
from c2d_core.ocean.signing import decrypt_message
from provider_api import schemas
from provider_api.auth import verify_request
from provider_api.deps import NonceStoreDep, ParamsDep, SettingsDep
from provider_api.errors import bad_request, echo, field_errors, forbidden
from provider_api.params import WholeNumber, parse_params, read_body

router = APIRouter(prefix="/api/services", tags=["encryption"])

# DDOs are a few KiB; the cap bounds what one request can make the Provider hold or inflate.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
FLAG_LZMA = 1
FLAG_ECIES = 2


@router.post(
    "/encrypt",
    name="encrypt",
    summary="encrypt",
    status_code=201,
    response_class=PlainTextResponse,
    description=(
        "ECIES-encrypt the raw request body (Content-Type: application/octet-stream) to this "
        "Provider's key for `chainId`. Answers 201 with the ciphertext as 0x-hex text."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses=schemas.responses(
        None,
        400,
        status=201,
        content={"text/plain": {"schema": {"type": "string"}, "example": "0x04ab..."}},
        description="The ciphertext, 0x-hex",
    ),
)
async def encrypt(
    request: Request,
    settings: SettingsDep,
    # A client number like any other (params.whole_number): not int()'s "1_000", " 12 " or 5,000 digits.
    chain_id: Annotated[
        WholeNumber, Query(alias="chainId", description="The chain whose provider key encrypts")
    ],
) -> PlainTextResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise bad_request("Content-Type must be application/octet-stream: send the document as raw bytes")
    if chain_id != settings.chain_id:
        raise bad_request(
            f"Unsupported chain ID {echo(str(chain_id))}: this Provider serves {settings.chain_id}"
        )
    data = await read_body(request, MAX_DOCUMENT_BYTES)
    if not data:
        raise bad_request("the request body is empty: send the bytes to encrypt")
    ciphertext = encrypt_for(public_key_of(settings.private_key_hex), data)
    return PlainTextResponse(ciphertext, status_code=201)


def _hex_bytes(value: str, field: str) -> bytes:
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise field_errors({field: [f"The {field} must be 0x-hex."]}) from None


def _inflate(data: bytes) -> bytes:
    decompressor = lzma.LZMADecompressor()
    try:
        document = decompressor.decompress(data, max_length=MAX_DOCUMENT_BYTES + 1)
    except lzma.LZMAError:
        raise bad_request("the document is flagged as LZMA-compressed but does not decompress") from None
    if len(document) > MAX_DOCUMENT_BYTES or not decompressor.eof:
        raise bad_request(f"the decompressed document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return document


def _open_document(body: schemas.DecryptBody, private_key_hex: str) -> bytes:
    assert body.encrypted_document is not None and body.flags is not None
    if len(body.encrypted_document) > 2 * MAX_DOCUMENT_BYTES + 2:
        raise bad_request(f"the encrypted document is larger than {MAX_DOCUMENT_BYTES} bytes")
    data = _hex_bytes(body.encrypted_document, "encryptedDocument")
    if body.flags & FLAG_ECIES:
        try:
            data = decrypt_with(private_key_hex, body.encrypted_document)
        except CryptoError as error:
            raise bad_request(f"Failed to decrypt: {error}") from None
    if body.flags & FLAG_LZMA:
        data = _inflate(data)
    return data


def _check_is_ddo_of(document: bytes, nft_address: str, chain_id: int) -> None:
    """The plaintext must be the DDO of the NFT named in the signed request: this keeps `decrypt` from
    opening a service's files blob, or another asset's document, for an allowed decrypter."""
    try:
        parsed: Any = json.loads(document)
    except ValueError:
        parsed = None
    expected = did_for(nft_address, chain_id)
    if not isinstance(parsed, dict) or str(parsed.get("id", "")).lower() != expected:
        raise bad_request(f"the document is not the DDO of dataNftAddress on chain {chain_id} ({expected})")


@router.post(
    "/decrypt",
    name="decrypt",
    summary="decrypt",
    openapi_extra=schemas.operation(body_model=schemas.DecryptBody),
    responses=schemas.responses(
        None, 400, 403, 503, status=201, content=schemas.TEXT, description="The decrypted DDO"
    ),
    status_code=201,
    response_class=PlainTextResponse,
    description=(
        "Decrypt a DDO for an allowed decrypter (Aquarius). JSON: decrypterAddress, chainId, dataNftAddress, "
        "encryptedDocument, flags (1 LZMA, 2 ECIES), documentHash (sha256 of the plaintext), nonce, "
        "signature over keccak(dataNftAddress + decrypterAddress + chainId + nonce). The transactionId "
        "form is not supported yet. Answers 201 with the document."
    ),
)
def decrypt(params: ParamsDep, settings: SettingsDep, store: NonceStoreDep) -> Response:
    body = parse_params(schemas.DecryptBody, params, shape="lists")
    if body.chain_id != settings.chain_id:
        raise bad_request(
            f"Unsupported chain ID {echo(str(body.chain_id))}: this Provider serves {settings.chain_id}"
        )
    if not is_address(body.decrypter_address):
        raise field_errors({"decrypterAddress": ["The decrypterAddress must be a 0x address."]})
    if to_checksum_address(body.decrypter_address) not in settings.allowed_decrypters:
        raise forbidden("Decrypter not authorized")
    if body.transaction_id:
        raise bad_request("decrypting by transactionId is not supported yet: send encryptedDocument")
    missing = {
        name: [f"The {name} field is required."]
        for name, value in (
            ("dataNftAddress", body.data_nft_address),
            ("encryptedDocument", body.encrypted_document),
            ("flags", body.flags),
            ("documentHash", body.document_hash),
        )
        if value is None or value == ""
    }
    if missing:
        raise field_errors(missing)
    assert body.data_nft_address is not None and body.document_hash is not None
    if not is_address(body.data_nft_address):
        raise field_errors({"dataNftAddress": ["The dataNftAddress must be a 0x address."]})
    # The signed text uses the fields exactly as sent (a JSON number chainId signs as its digits).
    message = decrypt_message(
        str(params.get("dataNftAddress")), str(params.get("decrypterAddress")), str(params.get("chainId"))
    )
    verify_request(
        store,
        body.decrypter_address,
        message,
        params.get("nonce"),
        body.signature,
        address_field="decrypterAddress",
    )
    document = _open_document(body, settings.private_key_hex)
    expected_hash = body.document_hash.lower().removeprefix("0x")
    if hashlib.sha256(document).hexdigest() != expected_hash:
        raise bad_request("Checksum doesn't match: sha256 of the document differs from documentHash")
    _check_is_ddo_of(document, body.data_nft_address, body.chain_id)
    return Response(document, status_code=201, media_type="text/plain")
