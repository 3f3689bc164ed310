"""Ocean's request parameter rule: the query string if it has any parameter, else the JSON body.

The two are never merged (as in Ocean's `get_request_data`), so a client cannot split one request's
fields between them. `parse_params` turns the dict into a model with Ocean's field-error shape.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from provider_api.errors import bad_request, field_errors, validation_errors

ModelT = TypeVar("ModelT", bound=BaseModel)

# A request body is never large on these routes (the largest is a DDO sent to /encrypt, which reads
# raw bytes itself); the cap keeps a client from making the Provider buffer gigabytes of JSON.
MAX_JSON_BYTES = 4 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (400) more than `limit` bytes without reading past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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


# For sync routes (run in the threadpool, so they may block on a database or the network): the body
# is read here, on the event loop.
ParamsDep = Annotated[dict[str, Any], Depends(request_params)]


def parse_params(model: type[ModelT], params: dict[str, Any]) -> ModelT:
    """Validate `params` into `model`; a failure is a 400 `errors` answer naming each field."""
    try:
        return model.model_validate(params)
    except ValidationError as error:
        raise field_errors(validation_errors(list(error.errors()))) from None
