"""Ocean's access-service routes, `initialize` and `download`, for the assets jobs publish (issue 8).

What a results asset serves, and why a DDO cannot point this Provider at any job it likes, is
provider_api.access; these routes parse, call it, and shape the answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from c2d_core.workflow import ADDRESS_PATTERN
from provider_api import schemas
from provider_api.deps import AccessDep, DagsterJobsDep, NonceStoreDep, ParamsDep, ResultStoresLaterDep
from provider_api.errors import field_errors
from provider_api.params import number_param
from provider_api.result_files import stream_job_result

router = APIRouter(prefix="/api/services", tags=["access"])


def _required(params: dict[str, Any], names: tuple[str, ...]) -> None:
    missing = {name: [f"The {name} field is required."] for name in names if params.get(name) in (None, "")}
    if missing:
        raise field_errors(missing)
    consumer = str(params.get("consumerAddress"))
    if not ADDRESS_PATTERN.match(consumer):
        raise field_errors({"consumerAddress": ["The consumerAddress must be a 0x address (40 hex digits)."]})


def _file_index(params: dict[str, Any], required: bool) -> int | None:
    raw = params.get("fileIndex")
    if raw is None or raw == "":
        if required:
            raise field_errors({"fileIndex": ["The fileIndex field is required."]})
        return None
    if str(raw).strip() == "-1" and not required:
        return None  # ocean.py's "no file index" in initialize
    return number_param(params, "fileIndex")


@router.get(
    "/initialize",
    summary="initialize",
    openapi_extra=schemas.operation(query_model=schemas.InitializeQuery),
    responses=schemas.responses(schemas.InitializeResult, 400, 404, 409, 410, 503),
    description=(
        "Before ordering an access service: the datatoken to order, the consumer's current nonce and a "
        "provider fee signed by the provider key (amount 0, no expiry), to pass to `startOrder`. With a "
        "still-valid `transferTxId` the answer is `{validOrder}` instead. With `fileIndex`, the file "
        "is checked first (a job's results still stored). A compute service is refused: use "
        "initializeCompute. Unsigned."
    ),
)
def initialize(
    params: ParamsDep, access: AccessDep, nonces: NonceStoreDep, jobs: DagsterJobsDep
) -> JSONResponse:
    _required(params, ("documentId", "serviceId", "consumerAddress"))
    file_index = _file_index(params, required=False)
    tx_id = params.get("transferTxId")
    answer = access.initialize(
        did=str(params["documentId"]),
        service_id=str(params["serviceId"]),
        consumer=str(params["consumerAddress"]),
        transfer_tx_id=str(tx_id) if tx_id else None,
        file_index=file_index,
        nonces=nonces,
        jobs=jobs,
    )
    return JSONResponse(answer)


@router.get(
    "/download",
    summary="download",
    response_class=Response,
    openapi_extra=schemas.operation(query_model=schemas.DownloadQuery, headers=schemas.RANGE_HEADER),
    responses=schemas.responses(
        None,
        400,
        404,
        409,
        410,
        416,
        503,
        content=schemas.BINARY,
        partial=True,
        description="The file's bytes",
    ),
    description=(
        "Stream one file of an access service the consumer ordered (`transferTxId`, checked on chain). "
        "Signed: keccak(documentId + nonce), EIP-191, by consumerAddress. Serves the results of a job "
        "published as an asset: `Range` honoured, `Content-Disposition` names the file, 410 once the "
        "results expired. Never a URL or a storage location."
    ),
)
def download(
    request: Request,
    params: ParamsDep,
    access: AccessDep,
    nonces: NonceStoreDep,
    jobs: DagsterJobsDep,
    result_stores: ResultStoresLaterDep,
) -> Response:
    _required(params, ("documentId", "serviceId", "transferTxId", "consumerAddress", "nonce", "signature"))
    file_index = _file_index(params, required=True)
    assert file_index is not None
    record, index = access.download(
        did=str(params["documentId"]),
        service_id=str(params["serviceId"]),
        consumer=str(params["consumerAddress"]),
        transfer_tx_id=str(params["transferTxId"]),
        file_index=file_index,
        nonce=params["nonce"],
        signature=params["signature"],
        nonces=nonces,
        jobs=jobs,
    )
    return stream_job_result(result_stores, record, index, request.headers.get("range"))
