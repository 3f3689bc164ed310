"""The consumer's algorithm code and custom data, kept out of the run config the Dagster UI shows.

A workflow travels as Dagster run config, which the UI displays to anyone who reaches it. A dataset's
file locations are safe there because they travel as the DDO's ECIES blob that only the configure pod
(holding the Provider's key) opens. The raw algorithm's code and `algocustomdata` now go the same way:
the Provider seals them into the algorithm's `encryptedSecrets`, encrypted to its own public key, and
keeps only the code's sha256 in the clear (the attestation and the results asset state it). The
configure pod opens them and writes them where the algorithm has always read them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from c2d_core.crypto import CryptoError, decrypt_with, encrypt_for
from c2d_core.workflow import Workflow


def seal_workflow(workflow: Workflow, public_key_hex: str) -> Workflow:
    """`workflow` with its algorithm's `rawcode` and `algocustomdata` sealed to `public_key_hex`; the
    workflow itself when it carries neither (or they are sealed already)."""
    algorithm = workflow.algorithm
    secrets: dict[str, Any] = {}
    if algorithm.rawcode is not None:
        secrets["rawcode"] = algorithm.rawcode
    if algorithm.algocustomdata is not None:
        secrets["algocustomdata"] = algorithm.algocustomdata
    if not secrets:
        return workflow
    document = workflow.model_dump(by_alias=True, mode="json", exclude_none=True)
    sealed = {key: value for key, value in document["algorithm"].items() if key not in secrets}
    sealed["encryptedSecrets"] = encrypt_for(public_key_hex, json.dumps(secrets).encode("utf-8"))
    if algorithm.rawcode is not None:
        sealed["rawcodeSha256"] = hashlib.sha256(algorithm.rawcode.encode("utf-8")).hexdigest()
    return Workflow.model_validate({**document, "algorithm": sealed})


def open_secrets(
    private_key_hex: str, encrypted_hex: str, rawcode_sha256: str | None
) -> tuple[str | None, Any]:
    """(rawcode, algocustomdata) of a sealed algorithm; CryptoError, saying nothing of the content,
    when the blob does not open, is malformed, or holds code whose sha256 is not `rawcode_sha256`."""
    plaintext = decrypt_with(private_key_hex, encrypted_hex)
    try:
        document = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CryptoError("the sealed algorithm document is not JSON") from None
    if not isinstance(document, dict):
        raise CryptoError("the sealed algorithm document is not an object")
    rawcode = document.get("rawcode")
    custom = document.get("algocustomdata")
    if rawcode is not None and not isinstance(rawcode, str):
        raise CryptoError("the sealed algorithm code is not text")
    if custom is not None and not isinstance(custom, dict):
        raise CryptoError("the sealed custom data is not an object")
    digest = hashlib.sha256(rawcode.encode("utf-8")).hexdigest() if rawcode is not None else None
    if digest != rawcode_sha256:
        raise CryptoError("the sealed algorithm code does not match the workflow's rawcodeSha256")
    return rawcode, custom
