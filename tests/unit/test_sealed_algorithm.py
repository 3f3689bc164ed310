"""The consumer's raw code and custom data sealed out of the run config (issue 16, item 7)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from eth_account import Account
from pydantic import ValidationError

from c2d_core import engine
from c2d_core.crypto import CryptoError, encrypt_for, public_key_of
from c2d_core.sealed import open_secrets, seal_workflow
from c2d_core.workflow import Workflow

CODE = "print('the consumer\u2019s own code')"


def _workflow(algorithm: dict) -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": uuid.uuid4().hex,
            "owner": "0x" + "1" * 40,
            "environment": "e1",
            "inputs": [{"did": "did:op:" + "a" * 64, "serviceId": "c", "files": {"encryptedFiles": "0x00"}}],
            "algorithm": {"container": {"entrypoint": "python $ALGO", "image": "python"}, **algorithm},
        }
    )


def test_sealed_code_and_custom_data_leave_the_run_config_and_open_with_the_key() -> None:
    key = Account.create().key.hex()
    plain = _workflow({"rawcode": CODE, "algocustomdata": {"column": "secret-column"}})
    sealed = seal_workflow(plain, public_key_of(key))
    config = json.dumps(engine.run_config(sealed))
    assert CODE not in config and "secret-column" not in config and "algocustomdata" not in config
    algorithm = engine.workflow_from_run_config(json.loads(config)).algorithm
    assert algorithm.is_raw and algorithm.did is None
    assert algorithm.code_sha256 == plain.algorithm.code_sha256 == hashlib.sha256(CODE.encode()).hexdigest()
    assert algorithm.encrypted_secrets is not None
    assert open_secrets(key, algorithm.encrypted_secrets, algorithm.rawcode_sha256) == (
        CODE,
        {"column": "secret-column"},
    )
    # Another key, or code that is not the one the digest names, does not open.
    with pytest.raises(CryptoError):
        open_secrets(Account.create().key.hex(), algorithm.encrypted_secrets, algorithm.rawcode_sha256)
    swapped = encrypt_for(public_key_of(key), json.dumps({"rawcode": "print('other')"}).encode())
    with pytest.raises(CryptoError, match="does not match"):
        open_secrets(key, swapped, algorithm.rawcode_sha256)


def test_a_published_algorithms_custom_data_is_sealed_and_nothing_else_changes() -> None:
    key = Account.create().key.hex()
    published = {"did": "did:op:" + "b" * 64, "files": {"encryptedFiles": "0x00"}}
    plain = _workflow({**published, "algocustomdata": {"k": "v"}})
    sealed = seal_workflow(plain, public_key_of(key))
    assert sealed.algorithm.algocustomdata is None and sealed.algorithm.rawcode_sha256 is None
    assert not sealed.algorithm.is_raw and sealed.algorithm.did == plain.algorithm.did
    assert sealed.algorithm.encrypted_secrets is not None
    assert open_secrets(key, sealed.algorithm.encrypted_secrets, None) == (None, {"k": "v"})
    bare = _workflow(published)
    assert seal_workflow(bare, public_key_of(key)) is bare


@pytest.mark.parametrize(
    "algorithm",
    [
        {"rawcodeSha256": "a" * 64},  # a digest without the sealed code
        {"encryptedSecrets": "0x00", "rawcode": CODE},  # both plain and sealed
        {"encryptedSecrets": "0x00", "rawcodeSha256": "A" * 64},
        {"encryptedSecrets": "not hex", "rawcodeSha256": "a" * 64},
    ],
)
def test_malformed_sealed_algorithms_are_refused(algorithm: dict) -> None:
    with pytest.raises(ValidationError):
        _workflow(algorithm)
