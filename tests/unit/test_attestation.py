"""c2d_core.attestation: a job's attestation signs and verifies, and every way it can be wrong is caught with
a sentence saying which: a changed field, another signer, a changed, missing or extra downloaded file."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from c2d_core.attestation import (
    FILENAME,
    Attestation,
    AttestationError,
    build_attestation,
    canonical_json,
    dump_file,
    sign_attestation,
    verify_attestation,
    verify_files,
)
from c2d_core.workflow import Workflow

PROVIDER: LocalAccount = Account.from_key("0x" + "b2" * 32)
OTHER: LocalAccount = Account.from_key("0x" + "c3" * 32)
CONSUMER = "0x" + "11" * 20
DID = "did:op:" + "ab" * 32
ALGO_DID = "did:op:" + "cd" * 32
JOB_ID = "0123456789abcdef0123456789abcdef"
OUTPUTS = {"result.txt": b"42\n", "table.csv": b"a,b\n1,2\n", "algorithm.log": b"ran\n"}


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def workflow(**algorithm: Any) -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": JOB_ID,
            "owner": CONSUMER,
            "environment": "ocean-compute",
            "chainId": 8996,
            "agreementId": "0x" + "ee" * 32,
            "inputs": [{"did": DID, "serviceId": "compute", "files": {"encryptedFiles": "0xab"}}],
            "algorithm": algorithm
            or {
                "did": ALGO_DID,
                "serviceId": "algo",
                "files": {"encryptedFiles": "0xcd"},
                "container": {
                    "entrypoint": "python $ALGO",
                    "image": "python",
                    "tag": "3.11",
                    "checksum": "sha256:" + "9f" * 32,
                },
            },
        }
    )


def attestation(**algorithm: Any) -> Attestation:
    results = [
        {"index": i, "filename": name, "filesize": len(data), "sha256": sha(data), "type": kind}
        for i, (name, data, kind) in enumerate(
            (name, data, "algorithmLog" if name.endswith(".log") else "output")
            for name, data in OUTPUTS.items()
        )
    ]
    return build_attestation(
        workflow(**algorithm),
        provider=PROVIDER.address,
        input_files=[[{"index": 0, "size": 1234, "sha256": "aa" * 32}]],
        algorithm_files=[{"index": 0, "size": 56, "sha256": "bb" * 32}],
        results=results,
        status=70,
        status_text="Job finished",
        started_at=1796290982.7,
        finished_at=1796291000.2,
        algorithm_termination="Completed",
        algorithm_exit_code=0,
    )


def downloaded(tmp_path: Path, signed: dict[str, Any]) -> Path:
    """A folder as `c2d compute results` leaves it: every result under its name, the attestation beside."""
    folder = tmp_path / "results"
    folder.mkdir()
    for name, data in OUTPUTS.items():
        (folder / name).write_bytes(data)
    (folder / FILENAME).write_bytes(dump_file(signed))
    return folder


def test_round_trip_states_the_job_and_verifies_against_the_providers_address() -> None:
    signed = sign_attestation(PROVIDER, attestation())
    checked = verify_attestation(dump_file(signed), PROVIDER.address.lower())
    assert checked == attestation()
    body = signed["attestation"]
    assert body["format"] == "c2d-job-attestation" and body["version"] == 1
    assert (body["jobId"], body["chainId"], body["environment"]) == (JOB_ID, 8996, "ocean-compute")
    assert body["provider"] == PROVIDER.address and body["owner"] == CONSUMER
    assert body["inputs"] == [
        {"did": DID, "serviceId": "compute", "files": [{"index": 0, "filesize": 1234, "sha256": "aa" * 32}]}
    ]
    assert body["algorithm"]["did"] == ALGO_DID and body["algorithm"]["rawcodeSha256"] is None
    assert body["algorithm"]["container"] == {
        "image": "python",
        "tag": "3.11",
        "entrypoint": "python $ALGO",
        "checksum": "sha256:" + "9f" * 32,
    }
    assert [r["filename"] for r in body["results"]] == list(OUTPUTS)
    assert body["results"][0] == {
        "index": 0,
        "filename": "result.txt",
        "filesize": 3,
        "type": "output",
        "sha256": sha(b"42\n"),
    }
    assert (body["status"], body["statusText"]) == (70, "Job finished")
    assert (body["dateStarted"], body["dateFinished"]) == ("2026-12-03T09:43:02Z", "2026-12-03T09:43:20Z")


def test_the_signature_is_a_personal_sign_of_the_canonical_json_any_library_checks() -> None:
    signed = sign_attestation(PROVIDER, attestation())
    canonical = canonical_json(signed["attestation"])
    assert b'": ' not in canonical and b', "' not in canonical and b"\n" not in canonical
    assert canonical.startswith(b'{"agreementId":')  # keys sorted
    # What a verifier without our code does: the canonical bytes, EIP-191, recover.
    text = json.dumps(json.loads(dump_file(signed))["attestation"], sort_keys=True, separators=(",", ":"))
    recovered = Account.recover_message(encode_defunct(text=text), signature=signed["signature"])
    assert recovered == PROVIDER.address


def test_a_raw_algorithm_is_named_by_its_codes_sha256() -> None:
    raw = {"rawcode": "print(42)\n", "container": {"entrypoint": "python $ALGO", "image": "python"}}
    body = sign_attestation(PROVIDER, attestation(**raw))["attestation"]
    assert body["algorithm"]["did"] is None
    assert body["algorithm"]["rawcodeSha256"] == sha(b"print(42)\n")
    assert body["algorithm"]["container"]["checksum"] is None


@pytest.mark.parametrize(
    "path, value",
    [
        (("status",), 41),
        (("results", 0, "sha256"), "00" * 32),
        (("inputs", 0, "files", 0, "sha256"), "cc" * 32),
        (("algorithm", "container", "image"), "evil/python"),
        (("jobId",), "f" * 32),
    ],
)
def test_a_changed_field_fails_as_tampered(path: tuple[Any, ...], value: Any) -> None:
    signed = copy.deepcopy(sign_attestation(PROVIDER, attestation()))
    target = signed["attestation"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(AttestationError) as caught:
        verify_attestation(signed, PROVIDER.address)
    assert caught.value.reason == "tampered"
    assert "changed after it was signed" in caught.value.message


def test_an_attestation_signed_by_another_key_fails_naming_both_addresses() -> None:
    forged = attestation().model_copy(update={"provider": OTHER.address})
    signed = sign_attestation(OTHER, forged)
    with pytest.raises(AttestationError) as caught:
        verify_attestation(signed, PROVIDER.address)
    assert caught.value.reason == "wrong_signer"
    assert OTHER.address in caught.value.message and PROVIDER.address in caught.value.message


def test_signing_refuses_a_key_that_is_not_the_named_providers() -> None:
    with pytest.raises(ValueError, match="attestation names"):
        sign_attestation(OTHER, attestation())


@pytest.mark.parametrize(
    "doc, reason, words",
    [
        (b"not json", "malformed", "not JSON"),
        (b"[]", "malformed", '{"attestation"'),
        (
            json.dumps({"attestation": {"format": "x", "version": 1}, "signature": "0x"}),
            "unsupported",
            "not a",
        ),
    ],
)
def test_a_document_that_is_no_attestation_says_so(doc: Any, reason: str, words: str) -> None:
    with pytest.raises(AttestationError) as caught:
        verify_attestation(doc, PROVIDER.address)
    assert caught.value.reason == reason and words in caught.value.message


def test_an_unknown_field_signed_by_the_provider_is_still_refused() -> None:
    # Signed, but not the format: a verifier must not accept what it would not show its user.
    body = attestation().document() | {"note": "trust me"}
    signature = Account.sign_message(encode_defunct(primitive=canonical_json(body)), PROVIDER.key).signature
    with pytest.raises(AttestationError) as caught:
        verify_attestation({"attestation": body, "signature": signature.hex()}, PROVIDER.address)
    assert caught.value.reason == "malformed" and "note" in caught.value.message


def test_every_downloaded_file_matches(tmp_path: Path) -> None:
    signed = sign_attestation(PROVIDER, attestation())
    checks = verify_files(verify_attestation(signed, PROVIDER.address), downloaded(tmp_path, signed))
    assert [(c.filename, c.outcome) for c in checks] == [(name, "ok") for name in OUTPUTS]


def test_a_modified_file_fails_naming_it(tmp_path: Path) -> None:
    signed = sign_attestation(PROVIDER, attestation())
    folder = downloaded(tmp_path, signed)
    (folder / "result.txt").write_bytes(b"43\n")  # same size, other content
    (folder / "table.csv").write_bytes(b"a,b\n")
    checks = {c.filename: c for c in verify_files(attestation(), folder)}
    assert checks["result.txt"].outcome == "sha256" and "result.txt's sha256" in checks["result.txt"].detail
    assert checks["table.csv"].outcome == "size"
    assert checks["table.csv"].detail == "table.csv has 4 bytes, the attestation says 8"
    assert checks["algorithm.log"].ok


def test_a_missing_and_an_extra_file_fail(tmp_path: Path) -> None:
    signed = sign_attestation(PROVIDER, attestation())
    folder = downloaded(tmp_path, signed)
    (folder / "table.csv").unlink()
    (folder / "planted.txt").write_bytes(b"x")
    (folder / "sub").mkdir()
    checks = {c.filename: c for c in verify_files(attestation(), folder)}
    assert checks["table.csv"].outcome == "missing" and "table.csv is not in" in checks["table.csv"].detail
    assert checks["planted.txt"].outcome == "extra"
    assert checks["planted.txt"].detail == "file planted.txt is not among the job's results"
    assert checks["sub"].outcome == "extra"
    assert FILENAME not in checks  # the attestation itself is not an extra file
    assert [name for name, check in checks.items() if check.ok] == ["result.txt", "algorithm.log"]


def test_a_symlink_in_place_of_a_result_counts_as_missing(tmp_path: Path) -> None:
    signed = sign_attestation(PROVIDER, attestation())
    folder = downloaded(tmp_path, signed)
    real = tmp_path / "elsewhere.txt"
    real.write_bytes(b"42\n")
    (folder / "result.txt").unlink()
    (folder / "result.txt").symlink_to(real)
    checks = {c.filename: c for c in verify_files(attestation(), folder)}
    assert checks["result.txt"].outcome == "missing"
