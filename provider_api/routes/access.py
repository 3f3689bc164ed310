"""Ocean's access-service routes, `initialize` and `download`, for the assets jobs publish (issue 8).

A results asset's `access` service holds, encrypted for this Provider, file objects of our own type
`{"type": "c2dResult", "jobId", "index"}`: "result `index` of job `jobId`". Whoever holds an order of
the asset's datatoken downloads that result, streamed from the result store by the same code as
`computeResult`. The DDO cannot point this Provider at any job it likes: anyone may encrypt a files
document to the Provider's public key, so a c2dResult file is served only when the job itself records
this very DID as its results asset (`c2d/results_did`, written by the engine that published it), and
only for a result the asset was published with (`c2d/results_asset_files`): the asset's owner may
rewrite its DDO later, but not to reach the job's logs or any result it was not published with.

Other file types (url, ipfs, ...) are refused with a 400: this Provider serves compute datasets to its
own engine, not downloads of third-party access assets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from c2d_core import job_tags
from c2d_core.ocean.signing import download_message
from c2d_core.result_assets import served_indexes
from c2d_core.workflow import ADDRESS_PATTERN, JOB_ID_PATTERN
from provider_api import policy, schemas
from provider_api.assets import ResolvedAsset
from provider_api.auth import verify_request
from provider_api.compute import ComputeService
from provider_api.dagster_jobs import BackendUnavailable
from provider_api.deps import DagsterJobsDep, NonceStoreDep, SettingsDep
from provider_api.errors import OceanHTTPError, backend_error, bad_request, echo, field_errors, not_found
from provider_api.jobs import JobRecord
from provider_api.nonces import NonceStoreUnavailable
from provider_api.orders import OrderError, ValidatedOrder, validate_order
from provider_api.params import ParamsDep, number_param
from provider_api.result_files import (
    ensure_results_published,
    read_job_manifest,
    result_stores,
    stream_job_result,
)
from provider_api.routes.compute import ComputeDep
from provider_api.routes.files import FileInfo
from provider_api.settings import ProviderSettings

router = APIRouter(prefix="/api/services", tags=["access"])

C2D_RESULT = "c2dResult"
_GONE = "the results this asset serves are no longer available on this Provider"


@dataclass(frozen=True)
class AccessService:
    asset: ResolvedAsset
    index: int  # the service's position in the DDO: the order's serviceIndex
    service: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.service.get("id"))

    @property
    def datatoken(self) -> str:
        return str(self.service.get("datatokenAddress", ""))


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


def _access_service(compute: ComputeService, did: str, service_id: str, consumer: str) -> AccessService:
    """The DDO's access service, after Ocean's consumability checks (state, credentials)."""
    asset = compute.resolve(did, "documentId")
    policy.check_asset_consumable(asset.ddo, state=asset.state, consumer=consumer, resource="documentId")
    found = asset.service(service_id)
    if found is None:
        raise bad_request(f"Invalid serviceId: the asset has no service {echo(service_id)!r}")
    index, service = found
    if service.get("type") == "compute":
        raise bad_request("Use the initializeCompute endpoint to initialize compute jobs.")
    if service.get("type") != "access":
        raise bad_request(f"service {echo(service_id)!r} is not an access service")
    return AccessService(asset=asset, index=index, service=service)


def _order(compute: ComputeService, access: AccessService, tx_id: str, consumer: str) -> ValidatedOrder:
    # No environment: an access fee names none, and the fee's providerData binds datatoken, service
    # id, DID and consumer, so a compute fee or another consumer's fee cannot pass for this one.
    return validate_order(
        compute.chain,
        tx_id=tx_id,
        datatoken=access.datatoken,
        nft=access.asset.nft_address,
        service_id=access.id,
        service_index=access.index,
        service_timeout=int(access.service.get("timeout") or 0),
        consumer=consumer,
        provider_address=compute.settings.address,
        did=access.asset.did,
    )


def _file(compute: ComputeService, access: AccessService, file_index: int) -> dict[str, Any]:
    files = compute.service_files(access.asset, access.service)
    if file_index >= len(files):
        raise bad_request(f"No such fileIndex {file_index}: the service has {len(files)} file(s)")
    return files[file_index]


def _result_of(file_object: dict[str, Any], did: str, operator: Any) -> tuple[JobRecord, int]:
    """The job and result index a c2dResult file names, once the job vouches for this asset and the
    asset was published with that result."""
    kind = file_object.get("type")
    if kind != C2D_RESULT:
        raise bad_request(
            f"Unsupported type {echo(kind)} by this Provider: its access services serve compute "
            f"results ({C2D_RESULT}) only"
        )
    job_id, index = file_object.get("jobId"), file_object.get("index")
    if (
        not isinstance(job_id, str)
        or not JOB_ID_PATTERN.match(job_id)
        or not isinstance(index, int)
        or isinstance(index, bool)
        or index < 0
    ):
        raise bad_request(f"malformed {C2D_RESULT} file: it needs a jobId and an index")
    try:
        record = operator.job(job_id)
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    if record is None or record.tags.get(job_tags.RESULTS_DID, "").lower() != did.lower():
        raise not_found(_GONE)
    if index not in served_indexes(record.tags):
        # What the owner may have put in the DDO after publishing (a log, a result left out): refused
        # as a file the asset does not have, whatever the encrypted files document says.
        raise bad_request(f"No such file: this asset was not published with result {index} of its job")
    return record, index


def result_file_infos(
    request: Request,
    settings: ProviderSettings,
    did: str,
    files: list[dict[str, Any]],
    *,
    with_checksum: bool,
) -> list[FileInfo]:
    """fileinfo for a results asset's files, read from the job's manifest (nothing is fetched).

    ocean.py asks fileinfo for every file before it downloads; each c2dResult file answers with the
    result's name, size and (when asked) the sha256 the publish step recorded. A file whose job does
    not vouch for the asset, or whose results are gone, is reported invalid with the reason.
    """
    from provider_api.deps import get_dagster_jobs

    operator = get_dagster_jobs(request, settings)
    infos = []
    for position, file_object in enumerate(files):
        try:
            record, index = _result_of(file_object, did, operator)
            ensure_results_published(record)
            entries = read_job_manifest(result_stores(request, settings), record)
            if index >= len(entries):
                raise not_found(f"no result {index}: the job has {len(entries)}")
        except OceanHTTPError as error:
            if error.status_code >= 500:
                raise
            reason = error.body.get("error") if isinstance(error.body, dict) else None
            infos.append(
                FileInfo(index=position, valid=False, type=C2D_RESULT, error=str(reason or "invalid"))
            )
            continue
        entry = entries[index]
        infos.append(
            FileInfo(
                index=position,
                valid=True,
                type=C2D_RESULT,
                contentLength=str(entry.filesize),
                contentType="application/octet-stream",
                filename=entry.filename,
                **({"checksum": entry.sha256, "checksumType": "sha256"} if with_checksum else {}),
            )
        )
    return infos


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
    params: ParamsDep, compute: ComputeDep, nonces: NonceStoreDep, operator: DagsterJobsDep
) -> JSONResponse:
    _required(params, ("documentId", "serviceId", "consumerAddress"))
    consumer = str(params["consumerAddress"])
    file_index = _file_index(params, required=False)
    access = _access_service(compute, str(params["documentId"]), str(params["serviceId"]), consumer)
    tx_id = params.get("transferTxId")
    if tx_id:
        try:
            order = _order(compute, access, str(tx_id), consumer)
        except OrderError:
            pass  # not a usable order: quote a fee for a new one
        else:
            return JSONResponse({"validOrder": order.tx_id})
    if file_index is not None:
        record, _index = _result_of(_file(compute, access, file_index), access.asset.did, operator)
        ensure_results_published(record)
    try:
        nonce = nonces.current(consumer)
    except NonceStoreUnavailable as error:
        raise backend_error(str(error)) from None
    return JSONResponse(
        {
            "datatoken": access.datatoken,
            "nonce": nonce,
            "providerFee": compute.access_fee(access.datatoken, access.id, access.asset.did, consumer),
        }
    )


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
    settings: SettingsDep,
    compute: ComputeDep,
    nonces: NonceStoreDep,
    operator: DagsterJobsDep,
) -> Response:
    _required(params, ("documentId", "serviceId", "transferTxId", "consumerAddress", "nonce", "signature"))
    file_index = _file_index(params, required=True)
    assert file_index is not None
    consumer = str(params["consumerAddress"])
    did = str(params["documentId"])
    # The nonce is spent before anything else happens, as on every signed route.
    verify_request(nonces, consumer, download_message(did), params["nonce"], params["signature"])
    access = _access_service(compute, did, str(params["serviceId"]), consumer)
    tx_id = str(params["transferTxId"])
    try:
        _order(compute, access, tx_id, consumer)
    except OrderError as error:
        raise OceanHTTPError(
            400, {"error": f"the order {echo(tx_id, 66)} does not allow this download: {error.message}"}
        ) from None
    record, index = _result_of(_file(compute, access, file_index), access.asset.did, operator)
    return stream_job_result(request, settings, record, index)
