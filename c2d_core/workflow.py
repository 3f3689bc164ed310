"""The `Workflow`: everything the Provider hands the engine to run one compute job.

It travels as Dagster run config, so it must never hold a plaintext dataset location in production:
the Provider passes each service's files as the DDO's encrypted blob (`encryptedFiles`), which only the
configure pod can decrypt. Plain `files` exist for tests and local data (see docs/architecture.md).
Resource limits are deliberately absent: the engine takes them from its own environment configuration
at run time, so a crafted run config cannot raise them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# `\Z`, not `$`: `$` also matches before a trailing newline, so "<id>\n" would pass.
DID_PATTERN = re.compile(r"^did:op:[0-9a-fA-F]{64}\Z")
# A job id is a uuid4 hex, as the Provider makes it (provider_api.compute) and Ocean's operator did.
JOB_ID_PATTERN = re.compile(r"^[0-9a-f]{32}\Z")
ADDRESS_PATTERN = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
# A transaction hash (an order's transferTxId, a job's agreementId) as clients send it: 64 hex digits,
# with or without 0x, in any case. `canonical_tx_id` gives the one form that is stored and compared.
_TX_ID = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")


def canonical_tx_id(value: object) -> str | None:
    """`value` as a transaction hash in its canonical form (0x + 64 lowercase hex), or None if it is not one.

    ocean.js strips the 0x from the agreement id it sends back; wallets and explorers print mixed case.
    """
    if not isinstance(value, str):
        return None
    match = _TX_ID.fullmatch(value)
    return "0x" + match.group(1).lower() if match else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class FileObject(BaseModel):
    """One of Ocean's file objects (`{"type": "url", "url": ..., "method": ..., "headers": ...}`).

    Other types (`ipfs`, `s3`, `arweave`) carry their own fields, kept as extras for their fetchers.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    # Any registered file source's type (c2d_core.fetch); an unknown one fails when it is fetched.
    type: str = Field(default="url", min_length=1, max_length=40)
    url: str | None = None
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _url_needs_location(self) -> FileObject:
        if self.type == "url" and not self.url:
            raise ValueError("a file of type 'url' needs a 'url'")
        return self


class ServiceFiles(_Model):
    """A service's files: either the DDO's encrypted blob or plain file objects, never both."""

    encrypted_files: str | None = Field(default=None, alias="encryptedFiles")
    files: list[FileObject] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ServiceFiles:
        if (self.encrypted_files is None) == (self.files is None):
            raise ValueError("give exactly one of 'encryptedFiles' or 'files'")
        if self.files is not None and not self.files:
            raise ValueError("'files' must list at least one file")
        if self.encrypted_files is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.encrypted_files):
            raise ValueError("'encryptedFiles' must be a hex string")
        return self


class DatasetInput(_Model):
    did: str
    service_id: str = Field(alias="serviceId")
    order_tx: str | None = Field(default=None, alias="transferTxId")
    ddo: dict[str, Any] | None = None
    files: ServiceFiles
    userdata: dict[str, Any] | None = None

    @field_validator("did")
    @classmethod
    def _did(cls, value: str) -> str:
        if not DID_PATTERN.match(value):
            raise ValueError("a dataset DID looks like did:op:<64 hex characters>")
        return value.lower()

    @property
    def did_hash(self) -> str:
        """The DID without `did:op:`: Ocean's folder name under /data/inputs."""
        return self.did.removeprefix("did:op:")


class Container(_Model):
    entrypoint: str
    image: str
    tag: str = "latest"
    checksum: str | None = None

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the container entrypoint is empty")
        return value

    @field_validator("image", "tag")
    @classmethod
    def _image_part(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", value):
            raise ValueError("image and tag may hold letters, digits and . _ / : @ - only")
        return value

    @property
    def reference(self) -> str:
        """`image@sha256:...` when the checksum is a digest, else `image:tag` (Ocean's rule)."""
        if self.checksum and self.checksum.startswith("sha256:"):
            return f"{self.image}@{self.checksum}"
        return f"{self.image}:{self.tag}"


class AlgorithmSpec(_Model):
    """A published algorithm (`did` + `files`) or a raw one (`rawcode`), always with a container.

    The consumer's code and custom data are theirs alone: the Provider seals them (c2d_core.sealed)
    into `encryptedSecrets`, encrypted to its key as a DDO's files are, so the run config the Dagster
    UI shows holds neither; only the configure pod opens them. A raw algorithm sealed so carries its
    code's `rawcodeSha256` instead of the code. Plain `rawcode` / `algocustomdata` remain for tests and
    direct runs.
    """

    did: str | None = None
    service_id: str | None = Field(default=None, alias="serviceId")
    order_tx: str | None = Field(default=None, alias="transferTxId")
    ddo: dict[str, Any] | None = None
    files: ServiceFiles | None = None
    rawcode: str | None = None
    container: Container
    algocustomdata: dict[str, Any] | None = None
    userdata: dict[str, Any] | None = None
    # ECIES (hex) of {"rawcode"?: str, "algocustomdata"?: object}, to the Provider's public key.
    encrypted_secrets: str | None = Field(default=None, alias="encryptedSecrets")
    rawcode_sha256: str | None = Field(default=None, alias="rawcodeSha256")

    @field_validator("did")
    @classmethod
    def _did(cls, value: str | None) -> str | None:
        if value is not None and not DID_PATTERN.match(value):
            raise ValueError("an algorithm DID looks like did:op:<64 hex characters>")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _published_or_raw(self) -> AlgorithmSpec:
        if self.encrypted_secrets is not None:
            if not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.encrypted_secrets):
                raise ValueError("'encryptedSecrets' must be a hex string")
            if self.rawcode is not None or self.algocustomdata is not None:
                raise ValueError("sealed code and custom data travel in 'encryptedSecrets' only")
        if self.rawcode_sha256 is not None:
            if self.encrypted_secrets is None or self.rawcode is not None:
                raise ValueError(
                    "'rawcodeSha256' stands for sealed code: give 'encryptedSecrets', no 'rawcode'"
                )
            if not re.fullmatch(r"[0-9a-f]{64}", self.rawcode_sha256):
                raise ValueError("'rawcodeSha256' is 64 lowercase hex characters")
        if self.is_raw:
            if self.did is not None or self.files is not None:
                raise ValueError("a raw algorithm has 'rawcode' only, no 'did' or 'files'")
            if self.rawcode is not None and not self.rawcode.strip():
                raise ValueError("'rawcode' is empty")
        elif self.did is None or self.files is None:
            raise ValueError("an algorithm is either published ('did' and 'files') or raw ('rawcode')")
        return self

    @property
    def is_raw(self) -> bool:
        """A raw algorithm: its code is in the workflow, plain or sealed."""
        return self.rawcode is not None or self.rawcode_sha256 is not None

    @property
    def code_sha256(self) -> str | None:
        """The sha256 (hex) of a raw algorithm's code, plain or sealed; None for a published one."""
        if self.rawcode is not None:
            return hashlib.sha256(self.rawcode.encode("utf-8")).hexdigest()
        return self.rawcode_sha256

    @property
    def did_hash(self) -> str:
        return self.did.removeprefix("did:op:") if self.did else ""


MAX_OUTPUT_METADATA_BYTES = 16 * 1024


class OutputMetadata(_Model):
    """What the consumer says about a results asset: it becomes the new DDO's `metadata` (with provenance)."""

    name: str = Field(min_length=1, max_length=256)
    description: str = Field(default="", max_length=8192)
    tags: list[str] = Field(default_factory=list, max_length=32)
    license: str = Field(default="No License Specified", min_length=1, max_length=256)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not 1 <= len(tag) <= 64:
                raise ValueError("each tag holds 1 to 64 characters")
        return value

    @model_validator(mode="after")
    def _size(self) -> OutputMetadata:
        if len(self.model_dump_json().encode()) > MAX_OUTPUT_METADATA_BYTES:
            raise ValueError(f"output metadata is larger than {MAX_OUTPUT_METADATA_BYTES} bytes")
        return self


class OutputRequest(_Model):
    """Ocean's historical `output` object: publish the job's results as a new asset the owner holds.

    Absent (or `publishOutput` false) means nothing changes: results are downloaded with computeResult.
    """

    publish_output: bool = Field(default=False, alias="publishOutput")
    publish_algorithm_log: bool = Field(default=False, alias="publishAlgorithmLog")
    metadata: OutputMetadata | None = None
    # Who owns the new NFT and datatoken; the Provider fills in the consumer when it is absent.
    owner: str | None = None

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value is not None and not ADDRESS_PATTERN.match(value):
            raise ValueError("output owner is an Ethereum address, 0x followed by 40 hex characters")
        return value

    @model_validator(mode="after")
    def _metadata_when_publishing(self) -> OutputRequest:
        if self.publish_output and self.metadata is None:
            raise ValueError("publishOutput needs 'metadata' (at least a name)")
        if self.publish_algorithm_log and not self.publish_output:
            raise ValueError("publishAlgorithmLog needs publishOutput")
        return self


class Workflow(_Model):
    job_id: str = Field(alias="jobId")
    owner: str
    environment: str
    agreement_id: str | None = Field(default=None, alias="agreementId")
    chain_id: int | None = Field(default=None, alias="chainId")
    inputs: list[DatasetInput] = Field(min_length=1, max_length=32)
    algorithm: AlgorithmSpec
    # The datasets' own consent (every compute input's `allowNetworkAccess`), checked by the Provider;
    # the algorithm gets a network only when this and its environment both allow it.
    allow_network: bool = Field(default=False, alias="allowNetworkAccess")
    # Publish the results as a new Ocean asset (issue 8); None = the ordinary results only.
    output: OutputRequest | None = None

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        if not JOB_ID_PATTERN.match(value):
            raise ValueError("jobId is 32 lowercase hex characters (a uuid4 hex)")
        return value

    @field_validator("agreement_id")
    @classmethod
    def _agreement_id(cls, value: str | None) -> str | None:
        # Run tags and agreement claims are matched exactly: a transaction hash gets its one spelling.
        return canonical_tx_id(value) or value

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        if not ADDRESS_PATTERN.match(value):
            raise ValueError("owner is an Ethereum address, 0x followed by 40 hex characters")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("environment id may hold letters, digits and . _ - (at most 128)")
        return value

    @property
    def dids(self) -> list[str]:
        return [item.did for item in self.inputs]
