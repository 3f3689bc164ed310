"""Ocean's compute routes: environments, initializeCompute, start / status / stop / delete, results.

Each route parses its parameters, calls one function of provider_api.compute (environments,
initialize, start) or provider_api.consumer_jobs (a consumer's jobs), and shapes the answer. Signed
routes spend the request's nonce before anything else happens, so a replayed or reordered request has
no effect; no route ever returns a file location. Handlers are plain functions: FastAPI runs them in
its thread pool, so chain, database and GraphQL calls never block the event loop.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from provider_api import consumer_jobs, schemas
from provider_api.consumer_jobs import SignedJobRequest
from provider_api.deps import (
    AgreementClaimsDep,
    ComputeDep,
    DagsterJobsDep,
    NonceStoreDep,
    ParamsDep,
    ResultStoresLaterDep,
)
from provider_api.errors import OceanHTTPError, field_errors
from provider_api.params import BYTE_DIGITS, agreement_id_param, job_id_param, number_param, parse_params
from provider_api.result_files import stream_job_result

router = APIRouter(prefix="/api/services", tags=["compute"])

_ADDRESS = r"0x[0-9a-fA-F]{40}"


def _consumer(params: dict[str, Any]) -> str:
    consumer = str(params.get("consumerAddress") or "")
    if not re.fullmatch(_ADDRESS, consumer):
        raise field_errors({"consumerAddress": "required: the consumer's address"})
    return consumer


@router.get(
    "/computeEnvironments",
    summary="computeEnvironments",
    openapi_extra=schemas.operation(query_model=schemas.ChainIdQuery),
    responses=schemas.responses(dict[str, list[schemas.ComputeEnvironment]], 400, 503),
    description="The compute environments of each chain this Provider serves, with live job counts.",
)
def compute_environments(params: ParamsDep, service: ComputeDep, jobs: DagsterJobsDep) -> JSONResponse:
    chain_id = number_param(params, "chainId", BYTE_DIGITS)
    return JSONResponse(service.environment_listing(chain_id, jobs))


@router.post(
    "/initializeCompute",
    summary="initializeCompute",
    openapi_extra=schemas.operation(body_model=schemas.InitializeComputeBody),
    responses=schemas.responses(schemas.InitializeComputeResult, 400, 503),
    description=(
        "Provider fees for each input of a compute job (signed by the provider key), or the still-valid "
        "order to reuse. Runs the per-dataset and trusted-algorithm checks; no orders are needed yet."
    ),
)
def initialize_compute(params: ParamsDep, service: ComputeDep) -> JSONResponse:
    body = parse_params(schemas.InitializeComputeBody, params, shape="text")
    return JSONResponse(service.initialize(body))


@router.post(
    "/compute",
    summary="computeStart",
    openapi_extra=schemas.operation(body_model=schemas.ComputeStartBody),
    responses=schemas.responses(list[schemas.ComputeJob], 400, 503),
    description=(
        "Start a compute job. Signed: keccak(consumerAddress + dataset.documentId + nonce), EIP-191. "
        "Every dataset and the algorithm need a valid order naming this environment's fee. Optional "
        "`output` (Ocean's field; an object or a JSON string): `{publishOutput, publishAlgorithmLog, "
        "metadata: {name, description, tags, license}, owner}` publishes the results as a new asset "
        "owned by `owner` (default: the consumer), whose DID the job reports as `resultsDid`."
    ),
)
def compute_start(
    params: ParamsDep,
    service: ComputeDep,
    nonces: NonceStoreDep,
    jobs: DagsterJobsDep,
    claims: AgreementClaimsDep,
) -> JSONResponse:
    body = parse_params(schemas.ComputeStartBody, params, shape="text")
    record = service.start(body, nonces=nonces, claims=claims, jobs=jobs)
    return JSONResponse([consumer_jobs.job_json(jobs, record)])


@router.get(
    "/compute",
    summary="computeStatus",
    openapi_extra=schemas.operation(query_model=schemas.ComputeStatusQuery),
    responses=schemas.responses(list[schemas.ComputeJob], 400, 404, 503),
    description=(
        "Jobs of a consumer (optionally one job or one agreement). A signature, if sent, is ignored. "
        "Besides Ocean's keys: `statusDetail`, `phases`, `terminationDetails`, `runStatus`, `queuePosition`, "
        '`resultsDid` (the DID of the asset the results were published as, or "") and, for a job '
        "started with `output.publishOutput`, `resultsAsset` `{status: pending|published|skipped|failed, "
        "detail}`."
    ),
)
def compute_status(params: ParamsDep, jobs: DagsterJobsDep) -> JSONResponse:
    consumer = _consumer(params)
    job_id = job_id_param(params, required=False)
    # As in Ocean's Provider, a jobId makes agreementId no filter (ocean.js sends both, the agreement
    # id without its 0x); alone, it is compared in its canonical form.
    agreement_id = None if job_id else agreement_id_param(params)
    return JSONResponse(consumer_jobs.status(jobs, consumer, job_id, agreement_id))


def _signed_job_request(params: dict[str, Any]) -> SignedJobRequest:
    """A signed stop or delete, every field checked (all field errors at once) before the signature.

    The job is named by `jobId` (then `agreementId` is ignored, as on status) or, without one, by
    `agreementId` in its canonical form. Both are checked against their patterns before any lookup.
    """
    consumer = str(params.get("consumerAddress") or "")
    errors: dict[str, Any] = {}
    if not re.fullmatch(_ADDRESS, consumer):
        errors["consumerAddress"] = "required: the consumer's address"
    for name in ("nonce", "signature"):
        if not params.get(name):
            errors[name] = "required"
    job_id: str | None = None
    agreement_id: str | None = None
    try:
        job_id = job_id_param(params, required=not params.get("agreementId"))
        agreement_id = None if job_id else agreement_id_param(params)
    except OceanHTTPError as error:
        errors.update(error.body["errors"])
    if errors:
        raise field_errors(errors)
    return SignedJobRequest(
        consumer=consumer,
        job_id=job_id,
        agreement_id=agreement_id,
        document_id=str(params.get("documentId") or ""),
        nonce=str(params["nonce"]),
        signature=str(params["signature"]),
    )


@router.put(
    "/compute",
    summary="computeStop",
    openapi_extra=schemas.operation(
        query_model=schemas.SignedJobRequest, body_model=schemas.SignedJobRequest
    ),
    responses=schemas.responses(list[schemas.ComputeJob], 400, 404, 503),
    description=(
        "Stop a job: the algorithm is killed, its outputs so far and the logs are still published. Signed."
    ),
)
def compute_stop(params: ParamsDep, nonces: NonceStoreDep, jobs: DagsterJobsDep) -> JSONResponse:
    return JSONResponse(consumer_jobs.stop(jobs, nonces, _signed_job_request(params)))


@router.delete(
    "/compute",
    summary="computeDelete",
    openapi_extra=schemas.operation(
        query_model=schemas.SignedJobRequest, body_model=schemas.SignedJobRequest
    ),
    responses=schemas.responses(list[schemas.ComputeJob], 400, 404, 503),
    description=(
        "Kept for Ocean clients: stops the job if it still runs; results expire with storageExpiry. Signed."
    ),
)
def compute_delete(params: ParamsDep, nonces: NonceStoreDep, jobs: DagsterJobsDep) -> JSONResponse:
    return JSONResponse(consumer_jobs.delete(jobs, nonces, _signed_job_request(params)))


@router.get(
    "/computeResult",
    summary="computeResult",
    response_class=Response,
    openapi_extra=schemas.operation(query_model=schemas.ComputeResultQuery, headers=schemas.RANGE_HEADER),
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
        description="The result's bytes",
    ),
    description=(
        "Stream one result of a finished job by its index (owner only; `Range` honoured). "
        "Signed: keccak(consumerAddress + jobId + index + nonce)."
    ),
)
def compute_result(
    request: Request,
    params: ParamsDep,
    nonces: NonceStoreDep,
    jobs: DagsterJobsDep,
    stores: ResultStoresLaterDep,
) -> Response:
    index = number_param(params, "index")
    if index is None:
        raise field_errors({"index": "required: a result index, 0 or more"})
    consumer = _consumer(params)
    job_id = job_id_param(params, required=True)
    assert job_id is not None
    if not params.get("nonce") or not params.get("signature"):
        raise field_errors({"signature": "required with its nonce"})
    record = consumer_jobs.signed_result_job(
        jobs,
        nonces,
        consumer=consumer,
        job_id=job_id,
        index_text=str(params["index"]),  # signed as sent
        nonce=str(params["nonce"]),
        signature=str(params["signature"]),
    )
    return stream_job_result(stores, record, index, request.headers.get("range"))
