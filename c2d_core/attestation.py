"""The signed attestation of a finished job: what ran, on which inputs, and what came out, signed by the
Provider's key so a consumer (or anyone they hand the results to) can check it without trusting us.

Pure: no Dagster, FastAPI or network. The engine builds and signs one per job (an `attestation` result
beside the outputs and logs); `c2d compute verify` and any third party check it. The format is in
docs/api.md ("Job attestation"); this module is its reference implementation, not a requirement.

Signed form: EIP-191 `personal_sign` over the attestation's canonical JSON (keys sorted, no whitespace,
UTF-8, integers only), so one call of any Ethereum library (`Account.recover_message`, ethers'
`verifyMessage`) checks it, with no type schema to copy first as EIP-712 would need.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from c2d_core.workflow import ADDRESS_PATTERN, DID_PATTERN, JOB_ID_PATTERN, Workflow

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

FORMAT = "c2d-job-attestation"
VERSION = 1
# The result type and file name the attestation is served under (computeResult lists it last).
RESULT_TYPE = "attestation"
FILENAME = "attestation.json"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}\Z")
CHUNK = 1024 * 1024


class AttestationError(ValueError):
    """The attestation cannot be trusted; `reason` is one of malformed, unsupported, tampered,
    wrong_signer, and the message says what was wrong in words a consumer can act on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- the document ---------------------------------------------------------------------------------


class _Model(BaseModel):
    # Unknown keys are refused: a verifier must never accept a field it would not show the user.
    # The document is read by its camelCase names only (validate_by_name is for our own constructors).
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        strict=True,
    )


def _sha256(value: str) -> str:
    if not SHA256_PATTERN.match(value):
        raise ValueError("a sha256 is 64 lowercase hex digits")
    return value


class FileDigest(_Model):
    """One file a stage fetched (an input's or the algorithm's), by its index in the service's files."""

    index: int = Field(ge=0)
    filesize: int = Field(ge=0)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        return _sha256(value)


class InputRecord(_Model):
    did: str
    service_id: str | None = None
    files: list[FileDigest]

    @field_validator("did")
    @classmethod
    def _did(cls, value: str) -> str:
        if not DID_PATTERN.match(value):
            raise ValueError("a DID looks like did:op:<64 hex digits>")
        return value


class ContainerRecord(_Model):
    """The algorithm's container as its DDO (or the raw algorithm's request) states it."""

    image: str
    tag: str
    entrypoint: str
    checksum: str | None = None  # the image digest, `sha256:<hex>`, when one was given


class AlgorithmRecord(_Model):
    """A published algorithm (`did`, and its files' digests) or a raw one (`rawcodeSha256`)."""

    did: str | None = None
    service_id: str | None = None
    rawcode_sha256: str | None = None
    files: list[FileDigest]
    container: ContainerRecord

    @model_validator(mode="after")
    def _published_or_raw(self) -> AlgorithmRecord:
        if (self.did is None) == (self.rawcode_sha256 is None):
            raise ValueError("an algorithm has a did (published) or a rawcodeSha256 (raw), exactly one")
        if self.did is not None and not DID_PATTERN.match(self.did):
            raise ValueError("a DID looks like did:op:<64 hex digits>")
        if self.rawcode_sha256 is not None:
            _sha256(self.rawcode_sha256)
        return self


class ResultRecord(_Model):
    """One of the job's results as `computeResult` serves it (the job JSON's `results`, plus sha256)."""

    index: int = Field(ge=0)
    filename: str = Field(min_length=1)
    filesize: int = Field(ge=0)
    type: str
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        return _sha256(value)


class Attestation(_Model):
    format: Literal["c2d-job-attestation"] = "c2d-job-attestation"  # FORMAT
    version: Literal[1] = 1  # VERSION
    job_id: str
    chain_id: int | None
    environment: str
    provider: str  # the address whose key signs; `GET /` lists it under providerAddresses
    owner: str  # the consumer who started the job
    agreement_id: str | None = None  # the order (transaction) that paid for it
    inputs: list[InputRecord] = Field(min_length=1)
    algorithm: AlgorithmRecord
    results: list[ResultRecord]
    status: int
    status_text: str
    # How the algorithm ended (Ocean's 70 is also the status of an algorithm that exited 1).
    algorithm_termination: str | None = None
    algorithm_exit_code: int | None = None
    date_started: str  # ISO 8601 UTC, seconds: 2026-12-03T09:43:02Z
    date_finished: str

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not JOB_ID_PATTERN.match(value):
            raise ValueError("jobId is 32 lowercase hex digits")
        return value

    @field_validator("provider", "owner")
    @classmethod
    def _address(cls, value: str) -> str:
        if not ADDRESS_PATTERN.match(value):
            raise ValueError("an address is 0x followed by 40 hex digits")
        return value

    @field_validator("date_started", "date_finished")
    @classmethod
    def _date(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise ValueError("a date is ISO 8601 UTC to the second, e.g. 2026-12-03T09:43:02Z") from None
        return value

    def document(self) -> dict[str, Any]:
        """The attestation as the JSON object that is signed (camelCase keys, nulls kept)."""
        return self.model_dump(by_alias=True, mode="json")


def iso_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_attestation(
    workflow: Workflow,
    *,
    provider: str,
    input_files: Sequence[Sequence[Mapping[str, Any]]],
    algorithm_files: Sequence[Mapping[str, Any]],
    results: Iterable[Mapping[str, Any]],
    status: int,
    status_text: str,
    started_at: float,
    finished_at: float,
    algorithm_termination: str | None = None,
    algorithm_exit_code: int | None = None,
) -> Attestation:
    """The attestation of `workflow`'s job from what its stages recorded.

    `input_files[i]` are the configure stage's `{index, size, sha256}` of input i's files, and
    `algorithm_files` the algorithm's (a raw algorithm's single file is its code); `results` the
    manifest's public entries (`index, filename, filesize, type, sha256`). An input that was never
    fetched (the job failed before) has no files.
    """

    def digests(files: Sequence[Mapping[str, Any]]) -> list[FileDigest]:
        return [
            FileDigest(
                index=int(f["index"]),
                filesize=int(f["filesize"] if "filesize" in f else f["size"]),
                sha256=str(f["sha256"]),
            )
            for f in files
        ]

    algorithm = workflow.algorithm
    raw_sha = algorithm.code_sha256  # of the code, plain or sealed (c2d_core.sealed)
    return Attestation(
        job_id=workflow.job_id,
        chain_id=workflow.chain_id,
        environment=workflow.environment,
        provider=provider,
        owner=workflow.owner,
        agreement_id=workflow.agreement_id,
        inputs=[
            InputRecord(
                did=item.did,
                service_id=item.service_id,
                files=digests(input_files[i]) if i < len(input_files) else [],
            )
            for i, item in enumerate(workflow.inputs)
        ],
        algorithm=AlgorithmRecord(
            did=algorithm.did,
            service_id=algorithm.service_id,
            rawcode_sha256=raw_sha,
            files=digests(algorithm_files),
            container=ContainerRecord(
                image=algorithm.container.image,
                tag=algorithm.container.tag,
                entrypoint=algorithm.container.entrypoint,
                checksum=algorithm.container.checksum,
            ),
        ),
        results=[
            ResultRecord(
                index=int(entry["index"]),
                filename=str(entry["filename"]),
                filesize=int(entry["filesize"]),
                type=str(entry["type"]),
                sha256=str(entry["sha256"]),
            )
            for entry in results
        ],
        status=int(status),
        status_text=status_text,
        algorithm_termination=algorithm_termination,
        algorithm_exit_code=algorithm_exit_code,
        date_started=iso_time(started_at),
        date_finished=iso_time(finished_at),
    )


# --- canonical form and signature -----------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no whitespace, UTF-8 (not \\u-escaped). With integers only (no floats), this is also
    RFC 8785's JSON Canonicalization Scheme, so other languages reproduce it byte for byte."""
    _refuse_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise AttestationError(
            "malformed", "the attestation holds a non-integer number; it has none by design"
        )
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_floats(item)


def sign_attestation(key: LocalAccount | str | bytes, attestation: Attestation) -> dict[str, Any]:
    """The attestation file's content: `{"attestation": {...}, "signature": "0x…"}`, the signature an
    EIP-191 personal_sign of the attestation's canonical JSON by `key`, which must be `provider`'s."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    account = Account.from_key(key) if isinstance(key, str | bytes) else key
    if str(account.address).lower() != attestation.provider.lower():
        raise ValueError(f"the key is {account.address}'s, the attestation names {attestation.provider}")
    document = attestation.document()
    signed = Account.sign_message(encode_defunct(primitive=canonical_json(document)), account.key)
    return {"attestation": document, "signature": "0x" + bytes(signed.signature).hex().removeprefix("0x")}


def dump_file(signed: Mapping[str, Any]) -> bytes:
    """The file's bytes: indented for a reader; the signature covers the canonical form, not these bytes."""
    return json.dumps(signed, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def verify_attestation(doc: bytes | str | Mapping[str, Any], expected_signer: str) -> Attestation:
    """The attestation in `doc` (the file's bytes or its parsed JSON), once its signature is checked to be
    `expected_signer`'s and its fields to be the format's. Raises AttestationError saying what failed."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    envelope = _envelope(doc)
    body, signature = envelope["attestation"], envelope["signature"]
    fmt, version = body.get("format"), body.get("version")
    if fmt != FORMAT or version != VERSION:
        raise AttestationError(
            "unsupported", f"this is not a {FORMAT} version {VERSION} (format {fmt!r}, version {version!r})"
        )
    try:
        signer = str(
            Account.recover_message(
                encode_defunct(primitive=canonical_json(body)), signature=_signature(signature)
            )
        )
    except AttestationError:
        raise
    except Exception:
        # eth_keys raises assorted errors for r/s values off the curve; all mean the same here.
        raise AttestationError("tampered", "the signature does not recover to any address") from None
    claimed = body.get("provider")
    if signer.lower() != expected_signer.lower():
        if isinstance(claimed, str) and claimed.lower() == signer.lower():
            raise AttestationError(
                "wrong_signer",
                f"the attestation is signed by {signer}, another key than the expected Provider's "
                f"{expected_signer}",
            )
        raise AttestationError(
            "tampered",
            f"the signature does not match the attestation's content (it recovers to {signer}, not the "
            f"expected {expected_signer}): the attestation was changed after it was signed",
        )
    try:
        attestation = Attestation.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "attestation"
        raise AttestationError("malformed", f"attestation field {where}: {first['msg']}") from None
    if attestation.provider.lower() != signer.lower():
        raise AttestationError(
            "malformed",
            f"the attestation names {attestation.provider} as its Provider but {signer} signed it",
        )
    return attestation


def _envelope(doc: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(doc, bytes | str):
        try:
            parsed: Any = json.loads(doc)
        except (ValueError, UnicodeDecodeError) as error:
            raise AttestationError("malformed", f"the attestation file is not JSON ({error})") from None
    else:
        parsed = doc
    if (
        not isinstance(parsed, Mapping)
        or not isinstance(parsed.get("attestation"), Mapping)
        or not isinstance(parsed.get("signature"), str)
    ):
        raise AttestationError(
            "malformed", 'the attestation file is not {"attestation": {...}, "signature": "0x…"}'
        )
    extra = sorted(set(parsed) - {"attestation", "signature"})
    if extra:
        raise AttestationError("malformed", f"the attestation file has unknown keys: {', '.join(extra)}")
    return parsed


def _signature(signature: str) -> bytes:
    text = signature.strip().removeprefix("0x").removeprefix("0X")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise AttestationError("malformed", "the signature is not hex") from None
    if len(raw) != 65:
        raise AttestationError("malformed", f"the signature must be 65 bytes (r, s, v), got {len(raw)}")
    return raw


# --- the downloaded files -------------------------------------------------------------------------

Outcome = Literal["ok", "missing", "size", "sha256", "extra"]


@dataclass(frozen=True)
class FileCheck:
    """One file's verdict: a listed result (found and matching, missing, or different) or an extra file."""

    filename: str
    outcome: Outcome
    detail: str
    index: int | None = None
    type: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def local_name(result: ResultRecord) -> str:
    """The name a result is saved under: its own (the engine's result names are flat and distinct)."""
    return PurePosixPath(result.filename.replace("\\", "/")).name


def verify_files(
    attestation: Attestation, directory: Path, *, ignore: Iterable[str] = (FILENAME,)
) -> list[FileCheck]:
    """Every result the attestation lists, checked in `directory` by name, size and sha256, and every other
    file there reported as extra (`ignore`: the attestation file itself). Never raises for a mismatch."""
    checks = [_check_result(result, directory) for result in attestation.results]
    expected = {check.filename for check in checks}
    skip = expected | set(ignore)
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.name not in skip:
            kind = "folder" if path.is_dir() else "file"
            checks.append(FileCheck(path.name, "extra", f"{kind} {path.name} is not among the job's results"))
    return checks


def _check_result(result: ResultRecord, directory: Path) -> FileCheck:
    name = local_name(result)
    path = directory / name

    def verdict(outcome: Outcome, detail: str) -> FileCheck:
        return FileCheck(name, outcome, detail, index=result.index, type=result.type)

    if path.is_symlink() or not path.is_file():
        return verdict("missing", f"{name} is not in {directory}")
    size = path.stat().st_size
    if size != result.filesize:
        return verdict("size", f"{name} has {size} bytes, the attestation says {result.filesize}")
    digest = file_sha256(path)
    if digest != result.sha256:
        return verdict("sha256", f"{name}'s sha256 is {digest}, the attestation says {result.sha256}")
    return verdict("ok", f"{size} bytes, sha256 {digest}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
