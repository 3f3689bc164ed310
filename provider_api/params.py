"""Reading what a client sends: Ocean's parameter rule, and the one parser for numbers and ids in it.

Parameters come from the query string if it has any, else from the JSON body. The two are never
merged (as in Ocean's `get_request_data`), so a client cannot split one request's fields between them.
`parse_params` turns the dict into a model (provider_api.schemas) with Ocean's field-error shape;
`provider_api.deps.ParamsDep` hands a route the dict.

Every number a client sends (an index, a nonce, a Range position, a Content-Length) goes through
`whole_number`: ASCII digits only and a bounded length. `str.isdigit()` and `int()` also take "²"
and other scripts' digits (U+0661, an Arabic-Indic digit, is 1), and `int()` raises past 4,300
digits, which the catch-all would answer as a server error. Job ids and agreement ids are checked
against their patterns before any lookup, so nothing unbounded reaches run storage or an error message.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Request
from pydantic import BaseModel, BeforeValidator, ValidationError

from c2d_core.workflow import JOB_ID_PATTERN, canonical_tx_id
from provider_api.errors import bad_request, field_errors, validation_errors

ModelT = TypeVar("ModelT", bound=BaseModel)

_ASCII_DIGITS = re.compile(r"[0-9]+")
# Enough for any index or count a client has reason to send (a billion results or files).
INDEX_DIGITS = 9
# Byte positions and lengths: 19 digits hold every size up to 2**63.
BYTE_DIGITS = 19


class NumberError(ValueError):
    """A client's number was refused; the message says what is allowed (never the value)."""


def whole_number(value: object, max_digits: int = INDEX_DIGITS) -> int:
    """A whole number >= 0 as a client sends it: a JSON integer, or text of ASCII digits 0-9 only,
    with at most `max_digits` significant digits (leading zeros are free). Raises NumberError."""
    if isinstance(value, bool):
        raise NumberError("must be a whole number, 0 or more")
    if isinstance(value, int):
        if value < 0:
            raise NumberError("must be a whole number, 0 or more")
        if value >= 10**max_digits:
            raise NumberError(f"must have at most {max_digits} digits")
        return value
    if not isinstance(value, str) or not _ASCII_DIGITS.fullmatch(value):
        raise NumberError("must be a whole number written with the digits 0-9")
    if len(value.lstrip("0")) > max_digits:
        raise NumberError(f"must have at most {max_digits} digits")
    return int(value)


def number_param(params: dict[str, Any], name: str, max_digits: int = INDEX_DIGITS) -> int | None:
    """Parameter `name` as a whole number, None when absent or empty; a 400 naming it otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return whole_number(raw, max_digits)
    except NumberError as error:
        raise field_errors({name: [f"The {name} {error}."]}) from None


def _whole_number_field(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON number such as 1700000000.0: whole, though written as a float
    try:
        return whole_number(value, BYTE_DIGITS)
    except NumberError as error:
        raise ValueError(str(error)) from None


# For pydantic request models: the same rule as `whole_number` (pydantic's own int takes "1_000",
# " 12 " and integers of any length).
WholeNumber = Annotated[int, BeforeValidator(_whole_number_field)]


def job_id_param(params: dict[str, Any], required: bool) -> str | None:
    """`jobId` checked against the job-id pattern before any lookup; None when absent and optional."""
    raw = params.get("jobId")
    if raw is None or raw == "":
        if required:
            raise field_errors({"jobId": ["The jobId field is required."]})
        return None
    if not isinstance(raw, str) or not JOB_ID_PATTERN.match(raw):
        raise field_errors(
            {"jobId": ["The jobId is 32 lowercase hex characters, as computeStart returns it."]}
        )
    return raw


def agreement_id_param(params: dict[str, Any]) -> str | None:
    """`agreementId` in its canonical form (0x + lowercase hex), None when absent; any case, with or
    without 0x, is accepted (ocean.js sends it without)."""
    raw = params.get("agreementId")
    if raw is None or raw == "":
        return None
    canonical = canonical_tx_id(raw)
    if canonical is None:
        raise field_errors(
            {"agreementId": ["The agreementId is a transaction hash: 64 hex digits, with or without 0x."]}
        )
    return canonical


# A request body is never large on these routes (the largest is a DDO sent to /encrypt, which reads
# raw bytes itself); the cap keeps a client from making the Provider buffer gigabytes of JSON.
MAX_JSON_BYTES = 4 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (400) more than `limit` bytes without reading past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = whole_number(declared.strip(), BYTE_DIGITS) > limit
        except NumberError as error:
            if not _ASCII_DIGITS.fullmatch(declared.strip()):
                raise bad_request(f"the Content-Length header {error}") from None
            too_large = True  # more digits than any body could have
        if too_large:
            raise bad_request(f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise bad_request(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def request_params(request: Request) -> dict[str, Any]:
    """Query parameters when there are any (last value wins for a repeated name), else the JSON body.

    An empty body gives `{}`; a body that is not JSON, or JSON that is not an object, is a 400.
    """
    if request.query_params:
        return dict(request.query_params)
    body = await read_body(request, MAX_JSON_BYTES)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as error:
        # JSONDecodeError, UnicodeDecodeError, or an integer past Python's digit limit.
        message = error.msg if isinstance(error, json.JSONDecodeError) else str(error)[:200]
        raise bad_request(f"the request body is not valid JSON ({message})") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    return data


# How a field error lists its messages. "lists" is flask-sieve's shape, `{field: [message, ...]}`, which
# most routes answer; "text" is one sentence per field (the last rule it broke), which initializeCompute
# and computeStart have always answered. Both are on the wire today, so each caller names its own.
FieldErrorShape = Literal["lists", "text"]


def parse_params(model: type[ModelT], params: dict[str, Any], *, shape: FieldErrorShape) -> ModelT:
    """Validate `params` into `model`; a failure is a 400 `errors` answer naming each field, its
    messages in `shape`. The one parser of request models: every route's validation errors pass here."""
    try:
        return model.model_validate(params)
    except ValidationError as error:
        fields = validation_errors(list(error.errors()))
        if shape == "text":
            raise field_errors({name: messages[-1] for name, messages in fields.items()}) from None
        raise field_errors(fields) from None
