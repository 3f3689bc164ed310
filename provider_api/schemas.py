"""The Provider's wire contract as pydantic models, for the OpenAPI document `/openapi.json` serves.

The handlers read their parameters themselves (provider_api.params: the query string if it has any
parameter, else the JSON body), so FastAPI cannot see them. Each route instead declares here what it
reads: `query(...)`/`json_body(...)` turn a request model into OpenAPI `parameters`/`requestBody`
(passed as the route's `openapi_extra`), `responses(...)` lists its answers with the bodies the app
really sends, Ocean's error envelopes included. Field names are Ocean's, spelled as on the wire.

The bodies a route parses (`_Request` models: InitializeComputeBody, ComputeStartBody, DecryptBody and
the models they hold) are the ones the document shows: one model per body, parsed at run time with
`provider_api.params.parse_params`. Where the parser is stricter or looser than a JSON Schema can say
(a nonce kept as text, `userdata` as an object or the JSON text of one), the field carries the
documented schema beside its runtime type. The other request models (`_Wire`) only document
parameters that the routes read one by one.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.fields import ComputedFieldInfo, FieldInfo
from pydantic.json_schema import models_json_schema

from c2d_core.workflow import ADDRESS_PATTERN, JOB_ID_PATTERN, canonical_tx_id
from provider_api.params import WholeNumber

COMPONENTS = "#/components/schemas/{model}"


def _json_pattern(pattern: str) -> str:
    # JSON Schema patterns are ECMA regexes: no `\Z`, and their `$` never matches before a newline.
    return pattern.removesuffix("\\Z") + "$" if pattern.endswith("\\Z") else pattern


_ADDRESS = _json_pattern(ADDRESS_PATTERN.pattern)
_JOB_ID = _json_pattern(JOB_ID_PATTERN.pattern)
# A transaction hash as c2d_core.workflow.canonical_tx_id accepts it: 64 hex digits, 0x optional.
_TX_ID = "^(0[xX])?[0-9a-fA-F]{64}$"

QUERY_OR_JSON = (
    " Parameters come from the query string or, when it has none, from a JSON object body with the "
    "same names (never a mix of both)."
)


class _Wire(BaseModel):
    # Ocean's clients send keys a route does not read; the Provider ignores them.
    model_config = ConfigDict(extra="allow")


def _wire_title(name: str, info: FieldInfo | ComputedFieldInfo) -> str:
    # The title of the name clients send (`documentId` → "Documentid"), as for the `_Wire` models.
    return (info.alias or name).title()


def _as_documented(schema: dict[str, Any]) -> None:
    # Extra keys are accepted (and dropped); a field holding another model (or null) has no title, as
    # pydantic writes it when no title generator is set.
    schema["additionalProperties"] = True
    for field in schema.get("properties", {}).values():
        if any("$ref" in choice for choice in [field, *field.get("anyOf", [])]):
            field.pop("title", None)


class _Request(BaseModel):
    """A model a route parses its parameters with: Python names, Ocean's as aliases."""

    # Keys a route does not read (ocean.py's extras, ocean.js's legacy ones) are dropped, so a dump of
    # the model holds only what was checked; the document still says they are accepted.
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        field_title_generator=_wire_title,
        json_schema_extra=_as_documented,
    )


# --- error bodies --------------------------------------------------------------------------------


class OceanError(BaseModel):
    """Ocean's business-rule error: `{"error": "<sentence>"}`, or `{"error": {"<resource>": "<code>"}}`
    for a compute-policy or order refusal, which may add a `message`."""

    model_config = ConfigDict(extra="forbid")

    error: str | dict[str, str]
    message: str | None = Field(default=None, description="What was wrong, for a resource/code error")


class FieldErrors(BaseModel):
    """Ocean's field-rule error (flask-sieve's shape): one entry per field that broke a rule."""

    model_config = ConfigDict(extra="forbid")

    message: Literal["Validation error"]
    errors: dict[str, str | list[str]] = Field(description="field name → what is wrong with it")
    success: Literal[False]


ERROR_DESCRIPTIONS = {
    400: "Bad input: Ocean's `{error}` or the `{message, errors, success}` field-error shape",
    403: "The caller is not allowed (`{error}`)",
    404: "No such job, result or file for this consumer (`{error}`)",
    409: "The job's results are not published yet: retry when it ends (`{error}`)",
    410: "The results expired and were deleted (`{error}`)",
    416: "The Range cannot be served (`{error}`)",
    503: "A backend the Provider needs (chain, Dagster, its database) is down (`{error}`)",
}


# --- request models ------------------------------------------------------------------------------


class ChainIdQuery(_Wire):
    chainId: int | None = Field(default=None, description="Only this chain's environments")


class DecryptBody(_Request):
    """Signed by decrypterAddress: keccak(dataNftAddress + decrypterAddress + chainId + nonce)."""

    # The addresses' patterns are documented only: the route answers a malformed one with its own
    # field error (eth_utils.is_address, which also takes an address without 0x).
    decrypter_address: str = Field(alias="decrypterAddress", json_schema_extra={"pattern": _ADDRESS})
    chain_id: int = Field(alias="chainId")
    nonce: str | int = Field(description="Larger than the decrypter's last nonce")
    signature: str
    data_nft_address: Annotated[
        str | None, WithJsonSchema({"anyOf": [{"pattern": _ADDRESS, "type": "string"}, {"type": "null"}]})
    ] = Field(default=None, alias="dataNftAddress")
    transaction_id: str | None = Field(
        default=None, alias="transactionId", description="Not supported yet: send encryptedDocument"
    )
    encrypted_document: str | None = Field(default=None, alias="encryptedDocument", description="0x-hex")
    flags: int | None = Field(default=None, ge=0, le=255, description="1 LZMA, 2 ECIES")
    document_hash: str | None = Field(
        default=None, alias="documentHash", description="sha256 hex of the plaintext"
    )


class FileInfoBody(_Wire):
    """One file object (`type` and its fields), or `did` with `serviceId` for a published service's files."""

    type: str | None = Field(default=None, description="url, ipfs, arweave or s3")
    url: str | None = None
    method: str | None = Field(default=None, description="GET (default) or POST")
    headers: dict[str, str] | None = None
    hash: str | None = Field(default=None, description="ipfs")
    transactionId: str | None = Field(default=None, description="arweave")
    s3Access: dict[str, Any] | None = Field(default=None, description="s3")
    did: str | None = None
    serviceId: str | None = None
    checksum: bool | int | str | None = Field(default=None, description="Also hash the content (sha256)")


class ContainerBody(_Wire):
    entrypoint: str | None = None
    image: str | None = None
    tag: str | None = None
    checksum: str | None = Field(default=None, description="sha256:<64 hex>")


def _canonical_tx(value: Any) -> Any:
    # A transferTxId in any case, with or without 0x, becomes the one form that orders are checked
    # in and agreements are tagged and claimed under; anything else is left for the order check to refuse.
    return canonical_tx_id(value) or value


def _json_object(value: Any, name: str) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} must be a JSON object") from error
    return value


# Parsed as an object; documented as what clients may send: an object or JSON text holding one.
_OBJECT_OR_TEXT = {
    "anyOf": [{"additionalProperties": True, "type": "object"}, {"type": "string"}, {"type": "null"}]
}
ObjectOrText = Annotated[dict[str, Any] | None, WithJsonSchema(_OBJECT_OR_TEXT)]


class InputRef(_Request):
    document_id: str = Field(alias="documentId", min_length=1, description="The dataset's DID")
    service_id: str = Field(alias="serviceId", min_length=1)
    transfer_tx_id: str | None = Field(
        default=None, alias="transferTxId", description="The order's transaction"
    )
    userdata: ObjectOrText = Field(default=None, description="An object or JSON text")

    @field_validator("userdata", mode="before")
    @classmethod
    def _json_userdata(cls, value: Any) -> Any:
        return _json_object(value, "userdata")

    @field_validator("transfer_tx_id")
    @classmethod
    def _tx(cls, value: str | None) -> str | None:
        return _canonical_tx(value)


class RawAlgorithm(_Request):
    rawcode: str | None = None
    url: str | None = None
    container: dict[str, Any]


class AlgorithmRef(_Request):
    """A published algorithm (documentId, serviceId, transferTxId) or a raw one (`meta`)."""

    document_id: str | None = Field(default=None, alias="documentId")
    service_id: str | None = Field(default=None, alias="serviceId")
    transfer_tx_id: str | None = Field(default=None, alias="transferTxId")
    userdata: ObjectOrText = None
    algocustomdata: ObjectOrText = None
    meta: RawAlgorithm | None = None

    @field_validator("userdata", "algocustomdata", mode="before")
    @classmethod
    def _json_fields(cls, value: Any) -> Any:
        return _json_object(value, "algocustomdata")

    @field_validator("transfer_tx_id")
    @classmethod
    def _tx(cls, value: str | None) -> str | None:
        return _canonical_tx(value)


class ComputeSection(_Request):
    env: str = Field(min_length=1, description="The compute environment's id")
    valid_until: WholeNumber = Field(alias="validUntil", description="Epoch seconds the fee must cover")


class InitializeComputeBody(_Request):
    datasets: list[InputRef] = Field(min_length=1, max_length=17)
    algorithm: AlgorithmRef
    compute: ComputeSection
    consumer_address: str = Field(alias="consumerAddress", pattern=_ADDRESS)


class ComputeStartBody(_Request):
    """Signed: keccak(consumerAddress + dataset.documentId + nonce), EIP-191."""

    consumer_address: str = Field(alias="consumerAddress", pattern=_ADDRESS)
    signature: str = Field(min_length=1)
    # Kept as text: it is signed as sent (a JSON number signs as its digits).
    nonce: Annotated[str, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]})]
    environment: str = Field(min_length=1)
    dataset: InputRef
    algorithm: AlgorithmRef
    additional_datasets: list[InputRef] = Field(
        default_factory=list, alias="additionalDatasets", max_length=16
    )
    # Never read: `_additional_inputs` below moves ocean.py's name to additionalDatasets (or drops it
    # beside one); declared so the document names it.
    additional_inputs: list[InputRef] | None = Field(
        default=None,
        alias="additionalInputs",
        max_length=16,
        description="ocean.py's name for additionalDatasets",
    )
    # Ocean's `output` object, validated by provider_api.compute.parse_output (an object, or JSON text).
    output: Annotated[Any, WithJsonSchema(_OBJECT_OR_TEXT)] = Field(
        default=None,
        description="{publishOutput, publishAlgorithmLog, metadata, owner}: publish the results as an asset",
    )

    @model_validator(mode="before")
    @classmethod
    def _additional_inputs(cls, value: Any) -> Any:
        if isinstance(value, dict) and "additionalInputs" in value:
            value = dict(value)
            moved = value.pop("additionalInputs")
            value.setdefault("additionalDatasets", moved)
        return value

    @field_validator("nonce", mode="before")
    @classmethod
    def _nonce_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class ComputeStatusQuery(_Wire):
    consumerAddress: str = Field(pattern=_ADDRESS)
    jobId: str | None = Field(default=None, pattern=_JOB_ID)
    agreementId: str | None = Field(
        default=None, pattern=_TX_ID, description="Ignored when jobId is given; 0x optional, any case"
    )
    signature: str | None = Field(default=None, description="Ignored: status reads are unsigned")
    nonce: str | None = Field(default=None, description="Ignored")


class SignedJobRequest(_Wire):
    """Signed: keccak(consumerAddress + jobId + documentId + nonce)."""

    consumerAddress: str = Field(pattern=_ADDRESS)
    jobId: str = Field(pattern=_JOB_ID)
    nonce: str | int
    signature: str
    documentId: str | None = Field(default=None, description="Part of the signed message when sent")
    agreementId: str | None = None


class ComputeResultQuery(_Wire):
    """Signed: keccak(consumerAddress + jobId + index + nonce)."""

    consumerAddress: str = Field(pattern=_ADDRESS)
    jobId: str = Field(pattern=_JOB_ID)
    index: int = Field(ge=0, description="The result's index in the job's `results`")
    nonce: str | int
    signature: str


class ComputeStreamableLogsQuery(_Wire):
    """Signed: keccak(consumerAddress + jobId + nonce)."""

    consumerAddress: str = Field(pattern=_ADDRESS)
    jobId: str = Field(pattern=_JOB_ID)
    nonce: str | int
    signature: str


class InitializeQuery(_Wire):
    documentId: str = Field(description="The asset's DID")
    serviceId: str
    consumerAddress: str = Field(pattern=_ADDRESS)
    transferTxId: str | None = Field(default=None, description="An order to reuse while still valid")
    fileIndex: int | None = Field(default=None, ge=-1, description="Check this file first (-1: none)")


class DownloadQuery(_Wire):
    """Signed: keccak(documentId + nonce), EIP-191, by consumerAddress."""

    documentId: str
    serviceId: str
    transferTxId: str
    consumerAddress: str = Field(pattern=_ADDRESS)
    fileIndex: int = Field(ge=0)
    nonce: str | int
    signature: str


# --- response models -----------------------------------------------------------------------------


class ProviderFee(BaseModel):
    providerFeeAddress: str
    providerFeeToken: str
    providerFeeAmount: str = Field(description="wei, as decimal text")
    providerData: str
    v: int
    r: str
    s: str
    validUntil: int


class InitializeComputeItem(BaseModel):
    """One input: the still-valid order to reuse, or the datatoken to order with this provider fee."""

    validOrder: str | None = None
    datatoken: str | None = None
    providerFee: ProviderFee | None = None


class InitializeComputeResult(BaseModel):
    datasets: list[InitializeComputeItem]
    algorithm: InitializeComputeItem | None = Field(default=None, description="A published algorithm only")


class InitializeResult(BaseModel):
    """The datatoken, nonce and fee to order with, or `validOrder` alone for an order still valid."""

    validOrder: str | None = None
    datatoken: str | None = None
    nonce: int | None = None
    providerFee: ProviderFee | None = None


class ComputeEnvironment(BaseModel):
    id: str
    cpuNumber: int
    cpuType: str
    gpuNumber: int
    gpuType: str
    ramGB: float
    diskGB: float
    priceMin: float
    desc: str
    currentJobs: int
    queuedJobs: int
    maxJobs: int
    consumerAddress: str
    storageExpiry: int
    maxJobDuration: int
    maxQueueWait: int = Field(description="Seconds a job may wait in the queue (0: no limit)")
    feeToken: str
    allowNetwork: bool
    lastSeen: float | None


class ResultFile(BaseModel):
    filename: str | None = None
    filesize: int | None = None
    type: str | None = Field(default=None, description="output or algorithmLog")
    index: int | None = None


class Phase(BaseModel):
    started: str | None
    finished: str | None


class TerminationDetails(BaseModel):
    exitCode: int | None
    OOMKilled: bool
    reason: str | None


class ResultsAsset(BaseModel):
    status: Literal["pending", "published", "skipped", "failed"]
    detail: str


class ComputeJob(BaseModel):
    """Ocean's job JSON (dates are epoch seconds as decimal text), plus this Provider's own keys."""

    agreementId: str
    jobId: str
    owner: str
    status: int = Field(description="Ocean's status code, e.g. 1 warming up, 40 running, 70 finished")
    statusText: str
    dateCreated: str | None
    dateFinished: str | None
    results: list[ResultFile] | Literal[""] = Field(description='"" while the job has no results')
    stopreq: int = Field(description="1 stopped by a request, 2 past its deadline")
    removed: int
    resultsExpired: bool
    algoDID: str
    inputDID: list[str]
    resultsDid: str = Field(description='The DID the results were published as, or ""')
    resultsAsset: ResultsAsset | None = Field(default=None, description="Jobs started with output only")
    statusDetail: str
    phases: dict[str, Phase]
    terminationDetails: TerminationDetails
    runStatus: str = Field(description="The Dagster run's status")
    queuePosition: int | None = Field(description="1 for the next queued job of its environment")
    stoppedBy: Literal["consumer", "operator"] | None = Field(
        default=None, description="Who stopped it: its consumer (computeStop) or an operator (the Dagster UI)"
    )
    stoppedAt: str | None = Field(default=None, description="When it was stopped (epoch seconds)")


class FileInfo(BaseModel):
    """One file as fileinfo reports it (Ocean's keys); never its location."""

    index: int
    valid: bool
    type: str
    contentLength: str | None = None
    contentType: str | None = None
    filename: str | None = None
    checksum: str | None = Field(default=None, description="sha256 hex of the content, when asked for")
    checksumType: str | None = None
    error: str | None = Field(default=None, description="Why the file is not valid (no location in it)")


class ProviderInfo(BaseModel):
    software: str = Field(description="Always 'Provider', as Ocean's Provider answers")
    version: str
    chainIds: list[int]
    providerAddresses: dict[str, str] = Field(description="The provider's fee-signing address per chain id")
    serviceEndpoints: dict[str, list[str]] = Field(description="Ocean endpoint name → [METHOD, path]")


class NonceInfo(BaseModel):
    nonce: int = Field(description="The last nonce used by the address (1 if it never signed a request)")


class Container(BaseModel):
    model_config = ConfigDict(extra="allow")

    entrypoint: str
    image: str
    tag: str | None = None
    checksum: str


# --- building the operation's OpenAPI --------------------------------------------------------------

# The models the routes name by reference (json_body and the error answers register them);
# main.py adds them to the document's components.
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def components() -> dict[str, Any]:
    """The JSON schemas of the routes' body models (and the models they use), keyed by name."""
    models = [(model, "validation") for model in _BODY_MODELS.values()]
    _, top = models_json_schema(models, ref_template=COMPONENTS)  # type: ignore[arg-type]
    return dict(top.get("$defs", {}))


def _field_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=COMPONENTS)
    field: dict[str, Any] = dict(schema["properties"][name])
    field.pop("title", None)
    field.pop("default", None)
    # An optional parameter is left out, never sent as null: a query string has no null.
    choices = [choice for choice in field.pop("anyOf", []) if choice != {"type": "null"}]
    if len(choices) == 1:
        field.update(choices[0])
    elif choices:
        field["anyOf"] = choices
    return field


def query(model: type[BaseModel], *, required: bool = True) -> list[dict[str, Any]]:
    """The model's fields as query parameters. `required=False` marks all of them optional: the
    route takes them from a JSON body just as well."""
    parameters = []
    for name, info in model.model_fields.items():
        schema = _field_schema(model, name)
        description = schema.pop("description", None) or info.description
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": required and info.is_required(),
            "schema": schema,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    _BODY_MODELS[model.__name__] = model
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": COMPONENTS.format(model=model.__name__)}}},
    }


def operation(
    *,
    query_model: type[BaseModel] | None = None,
    body_model: type[BaseModel] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`openapi_extra` for a route reading `query_model`'s fields from the query (or, with a
    `body_model` too, from either) and/or `body_model` as JSON; `headers` names optional headers."""
    extra: dict[str, Any] = {}
    parameters: list[dict[str, Any]] = []
    if query_model is not None:
        parameters += query(query_model, required=body_model is None)
    for name, description in (headers or {}).items():
        parameters.append(
            {
                "name": name,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": description,
            }
        )
    if parameters:
        extra["parameters"] = parameters
    if body_model is not None:
        extra["requestBody"] = json_body(body_model, required=query_model is None)
    return extra


BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
TEXT = {"text/plain": {"schema": {"type": "string"}}}


def responses(
    ok: Any = None,
    *errors: int,
    status: int = 200,
    description: str = "Success",
    content: dict[str, Any] | None = None,
    partial: bool = False,
) -> dict[int | str, dict[str, Any]]:
    """The route's `responses`: `status` with `ok` as JSON (or `content`), 206 when `partial`, then
    each error status with Ocean's envelope."""
    answers: dict[int | str, dict[str, Any]] = {}
    success: dict[str, Any] = {"description": description}
    if ok is not None:
        success["model"] = ok
    if content is not None:
        success["content"] = content
    answers[status] = success
    if partial:
        answers[206] = {
            "description": "The requested byte range (`Range: bytes=start-end`)",
            "content": BINARY,
        }
    for code in errors:
        # Spelled out rather than as a `model`: FastAPI would file it under the route's own media
        # type (text/plain for encrypt, none for a download), and errors are always JSON.
        answers[code] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": _error_schema(code)}},
        }
    return answers


def _error_schema(code: int) -> dict[str, Any]:
    _BODY_MODELS.setdefault(OceanError.__name__, OceanError)
    _BODY_MODELS.setdefault(FieldErrors.__name__, FieldErrors)
    ocean = {"$ref": COMPONENTS.format(model=OceanError.__name__)}
    if code != 400:
        return ocean
    return {"anyOf": [ocean, {"$ref": COMPONENTS.format(model=FieldErrors.__name__)}]}


RANGE_HEADER = {"Range": "bytes=start-end (or start-): part of the file, answered with 206"}
