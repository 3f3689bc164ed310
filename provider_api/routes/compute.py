"""Ocean's compute routes: environments, initializeCompute, start / status / stop / delete, results.

Signed routes spend the request's nonce before anything else happens, so a replayed or reordered
request has no effect. Every response is built from run storage (through the operator) or from
the result store; no route ever returns a file location. Handlers are plain functions: FastAPI runs
them in its thread pool, so chain, database and GraphQL calls never block the event loop.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from c2d_core import job_tags
from c2d_core.result_stores import ResultStores
from c2d_core.results import MANIFEST_NAME, ResultEntry, ResultStore
from c2d_core.status import JobStatus
from provider_api.agreements import AgreementBusy, AgreementClaims, ClaimStoreUnavailable, operator_holder
from provider_api.auth import verify_request
from provider_api.compute import (
    CheckedInput,
    ComputeService,
    InitializeRequest,
    StartRequest,
    checksum_address,
    parse_request,
)
from provider_api.deps import ChainDep, EnvironmentsDep, NonceStoreDep, OperatorDep, SettingsDep, shared
from provider_api.errors import OceanHTTPError, backend_error, bad_request, field_errors, resource_error
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.operator import QUEUED_STATES, BackendUnavailable, JobConflict, JobNotFound
from provider_api.orders import OrderError, ensure_fee_paid, validate_order
from provider_api.params import ParamsDep

router = APIRouter(prefix="/api/services", tags=["compute"])
CHUNK = 64 * 1024


def get_compute_service(
    request: Request, settings: SettingsDep, environments: EnvironmentsDep, chain: ChainDep
) -> ComputeService:
    def build() -> ComputeService:
        from c2d_core.publishing import ecies_decryptor
        from provider_api.assets import ChainDdoResolver

        resolver = ChainDdoResolver(chain, ecies_decryptor(settings.private_key_hex))
        return ComputeService(settings, environments, resolver, chain)

    # One per app (its DDO index and checksum caches are shared), built once under the app's lock.
    return shared(request.app, "compute_service", build)


ComputeDep = Annotated[ComputeService, Depends(get_compute_service)]


def get_agreement_claims(request: Request, store: NonceStoreDep) -> AgreementClaims:
    """The agreement claims, in the nonce store's database (its engine, its schema)."""
    return shared(request.app, "agreement_claims", lambda: AgreementClaims(store.engine, schema=store.schema))


AgreementClaimsDep = Annotated[AgreementClaims, Depends(get_agreement_claims)]


def _environment_json(service: ComputeService, env_id: str, operator: Any) -> dict[str, Any]:
    env = service.environment(env_id)
    try:
        running, queued = operator.current_jobs(env.id)
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    return {
        "id": env.id,
        "cpuNumber": env.cpu_number,
        "cpuType": "",
        "gpuNumber": 0,
        "gpuType": "",
        "ramGB": env.ram_gb,
        "diskGB": env.disk_gb,
        "priceMin": env.price_min,
        "desc": env.description,
        "currentJobs": running,
        "queuedJobs": queued,
        "maxJobs": env.max_jobs,
        "consumerAddress": service.consumer_address_of(env),
        "storageExpiry": env.storage_expiry,
        "maxJobDuration": env.max_job_duration,
        "feeToken": service.fee_token_of(env),
        "allowNetwork": env.allow_network,
        "lastSeen": None,
    }


@router.get(
    "/computeEnvironments",
    summary="computeEnvironments",
    description="The compute environments of each chain this Provider serves, with live job counts.",
)
def compute_environments(
    request: Request,
    params: ParamsDep,
    settings: SettingsDep,
    environments: EnvironmentsDep,
    operator: OperatorDep,
    chain: ChainDep,
) -> JSONResponse:
    if "chainId" in params and str(params["chainId"]) != str(settings.chain_id):
        return JSONResponse({str(params["chainId"]): []})
    service = get_compute_service(request, settings, environments, chain)
    envs = [_environment_json(service, env.id, operator) for env in environments.all()]
    return JSONResponse({str(settings.chain_id): envs})


def _validated_order(
    service: ComputeService,
    item: Any,
    tx_id: str,
    consumer: str,
    environment: str | None,
    allowed_consumers: set[str],
) -> Any:
    return validate_order(
        service.chain,
        tx_id=tx_id,
        datatoken=str(item.service.get("datatokenAddress", "")),
        nft=item.asset.nft_address,
        service_id=str(item.service.get("id")),
        service_index=item.service_index,
        service_timeout=int(item.service.get("timeout") or 0),
        consumer=consumer,
        provider_address=service.settings.address,
        environment=environment,
        allowed_consumers=allowed_consumers,
        did=item.asset.did,
    )


def _validate(
    service: ComputeService,
    item: CheckedInput | Any,
    *,
    tx_id: str,
    consumer: str,
    environment: str | None,
    allowed_consumers: set[str],
    resource: str,
    code: str,
) -> Any:
    try:
        return _validated_order(service, item, tx_id, consumer, environment, allowed_consumers)
    except OrderError as error:
        raise OceanHTTPError(400, {"error": {resource: code}, "message": error.message}) from None


@router.post(
    "/initializeCompute",
    summary="initializeCompute",
    description=(
        "Provider fees for each input of a compute job (signed by the provider key), or the still-valid "
        "order to reuse. Runs the per-dataset and trusted-algorithm checks; no orders are needed yet."
    ),
)
def initialize_compute(params: ParamsDep, service: ComputeDep) -> JSONResponse:
    body = parse_request(InitializeRequest, params)
    env = service.environment(body.compute.env)
    now = service.chain.block_timestamp()
    if body.compute.valid_until <= now:
        raise bad_request("The validUntil value is not correct.")
    consumer = body.consumer_address
    inputs = [
        service.check_input(ref, "dataset" if i == 0 else f"datasets[{i}]", consumer, main=i == 0)
        for i, ref in enumerate(body.datasets)
    ]
    algorithm = service.check_algorithm(body.algorithm, inputs, consumer)
    env_consumer = service.consumer_address_of(env)
    allowed = {consumer.lower(), env_consumer.lower()}
    # Inputs in Ocean's order (datasets, then a published algorithm); one of them carries the fee.
    priced: list[tuple[Any, Any, str | None, str | None]] = [
        (item, item.ref, env.id, item.resource) for item in inputs
    ]
    if algorithm.asset is not None:
        priced.append((algorithm, body.algorithm, None, "algorithm"))
    answers: list[dict[str, Any]] = []
    payer_chosen = False
    validated: list[Any] = []
    for item, ref, environment, _resource in priced:
        order = None
        if ref.transfer_tx_id:
            try:
                order = _validated_order(service, item, ref.transfer_tx_id, consumer, environment, allowed)
            except OrderError:
                order = None  # not a reusable order: the input gets a fresh fee below
        validated.append(order)
    fee_index = next(
        (i for i, order in enumerate(validated) if order is not None and order.valid_until >= now), 0
    )
    for i, (item, _ref, _environment, _resource) in enumerate(priced):
        order = validated[i]
        answer: dict[str, Any] = {}
        paying = i == fee_index and not payer_chosen
        if order is not None:
            answer["validOrder"] = order.tx_id
            if order.valid_until >= body.compute.valid_until:
                answers.append(answer)
                payer_chosen = payer_chosen or paying
                continue
        answer["datatoken"] = str(item.service.get("datatokenAddress", ""))
        answer["providerFee"] = service.quote(
            env,
            answer["datatoken"],
            str(item.service.get("id")),
            item.asset.did,
            consumer,
            body.compute.valid_until,
            paying,
        )
        payer_chosen = payer_chosen or paying
        answers.append(answer)
    result: dict[str, Any] = {"datasets": answers[: len(inputs)]}
    if algorithm.asset is not None:
        result["algorithm"] = answers[len(inputs)]
    return JSONResponse(result)


@router.post(
    "/compute",
    summary="computeStart",
    description=(
        "Start a compute job. Signed: keccak(consumerAddress + dataset.documentId + nonce), EIP-191. "
        "Every dataset and the algorithm need a valid order naming this environment's fee."
    ),
)
def compute_start(
    params: ParamsDep,
    service: ComputeDep,
    nonces: NonceStoreDep,
    operator: OperatorDep,
    claims: AgreementClaimsDep,
) -> JSONResponse:
    body = parse_request(StartRequest, params)
    verify_request(
        nonces,
        body.consumer_address,
        body.consumer_address + body.dataset.document_id,
        body.nonce,
        body.signature,
    )
    env = service.environment(body.environment)
    consumer = body.consumer_address
    allowed = {consumer.lower(), service.consumer_address_of(env).lower()}
    refs = [body.dataset, *body.additional_datasets]
    inputs = [
        service.check_input(ref, "dataset" if i == 0 else f"datasets[{i}]", consumer, main=i == 0)
        for i, ref in enumerate(refs)
    ]
    algorithm = service.check_algorithm(body.algorithm, inputs, consumer)
    orders = []
    for i, item in enumerate(inputs):
        if not item.ref.transfer_tx_id:
            raise field_errors({f"{'dataset' if i == 0 else f'datasets[{i}]'}.transferTxId": "required"})
        orders.append(
            _validate(
                service,
                item,
                tx_id=item.ref.transfer_tx_id,
                consumer=consumer,
                environment=env.id,
                allowed_consumers=allowed,
                resource=f"{item.resource}.serviceId",
                code="order_invalid",
            )
        )
    if algorithm.asset is not None:
        if not body.algorithm.transfer_tx_id:
            raise field_errors({"algorithm.transferTxId": "required for a published algorithm"})
        orders.append(
            _validate(
                service,
                algorithm,
                tx_id=body.algorithm.transfer_tx_id,
                consumer=consumer,
                # Our fees name their environment on every input, the algorithm's included.
                environment=env.id,
                allowed_consumers=allowed,
                resource="algorithm",
                code="in_use_or_not_on_chain",
            )
        )
    _check_fees_paid(service, env, orders)
    workflow = service.build_workflow(body, env, inputs, algorithm, service.chain.chain_id)
    agreement = workflow.agreement_id
    try:
        # The claim makes "one unfinished job per agreement" hold across Provider replicas.
        if agreement:
            claims.claim(agreement, workflow.job_id, operator_holder(operator))
        record = operator.submit(workflow)
    except AgreementBusy as error:
        raise bad_request(str(error)) from None
    except JobConflict as error:
        # Dagster holds an unfinished run of the agreement that has no claim (launched before claims
        # existed): nothing was launched for this job, so its claim goes.
        _release_if_not_launched(claims, operator, agreement or "", workflow.job_id)
        raise bad_request(str(error)) from None
    except ClaimStoreUnavailable as error:
        raise backend_error(str(error)) from None
    except BackendUnavailable as error:
        if agreement:
            _release_if_not_launched(claims, operator, agreement, workflow.job_id)
        raise backend_error(f"compute backend unavailable: {error}") from None
    return JSONResponse([_job_json(operator, record)])


def _release_if_not_launched(claims: Any, operator: Any, agreement: str, job_id: str) -> None:
    """Free the agreement after a failed launch, unless a run for the job exists after all.

    Best effort: if Dagster or the database cannot say, the claim stays and goes stale on its own
    (agreements.STALE_AFTER), as after a Provider that died between the claim and the launch.
    """
    try:
        if operator.job(job_id) is None:
            claims.release(agreement, job_id)
    except (BackendUnavailable, ClaimStoreUnavailable):
        pass


def _job_json(operator: Any, record: JobRecord) -> dict[str, Any]:
    """Ocean's job JSON plus `queuePosition`: 1 for the next queued job of its environment, null
    when the job is not waiting in the queue (one extra count query per queued job)."""
    job = ocean_job_json(record)
    position = None
    if record.run_status in QUEUED_STATES:
        try:
            position = operator.queue_position(record)
        except BackendUnavailable:
            position = None  # the status itself was read; the position is best effort
    job["queuePosition"] = position
    return job


def _check_fees_paid(service: ComputeService, env: Any, orders: list[Any]) -> None:
    """One input must have paid, in the environment's fee token, what the job costs until validUntil."""
    if env.price_min <= 0:
        return
    now = service.chain.block_timestamp()
    valid_until = max(int(order.valid_until) for order in orders)
    required = service.fee_amount(env, valid_until - now)
    try:
        ensure_fee_paid(orders, required, service.fee_token_of(env))
    except OrderError:
        raise resource_error("order", "fees_not_paid") from None


def _owned_jobs(
    operator: Any, consumer: str, job_id: str | None, agreement_id: str | None
) -> list[JobRecord]:
    """The consumer's jobs; another consumer's job is indistinguishable from a missing one."""
    try:
        if job_id or agreement_id:
            records = operator.jobs(owner=None, job_id=job_id, agreement_id=agreement_id)
        else:
            records = operator.jobs(owner=checksum_address(consumer), job_id=None, agreement_id=None)
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    return [record for record in records if record.tags.get("c2d/owner", "").lower() == consumer.lower()]


@router.get(
    "/compute",
    summary="computeStatus",
    description="Jobs of a consumer (optionally one job or one agreement). A signature, if sent, is ignored.",
)
def compute_status(params: ParamsDep, operator: OperatorDep) -> JSONResponse:
    consumer = str(params.get("consumerAddress") or "")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", consumer):
        raise field_errors({"consumerAddress": "required: the consumer's address"})
    job_id = str(params.get("jobId") or "") or None
    agreement_id = str(params.get("agreementId") or "") or None
    records = _owned_jobs(operator, consumer, job_id, agreement_id)
    if job_id and not records:
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"})
    return JSONResponse([_job_json(operator, record) for record in records])


def _signed_job_request(params: dict[str, Any], nonces: Any) -> tuple[str, str]:
    consumer = str(params.get("consumerAddress") or "")
    job_id = str(params.get("jobId") or "")
    errors = {}
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", consumer):
        errors["consumerAddress"] = "required: the consumer's address"
    for name in ("nonce", "signature"):
        if not params.get(name):
            errors[name] = "required"
    if not job_id:
        errors["jobId"] = "required"
    if errors:
        raise field_errors(errors)
    message = consumer + job_id + str(params.get("documentId") or "")
    verify_request(nonces, consumer, message, str(params["nonce"]), str(params["signature"]))
    return consumer, job_id


@router.put(
    "/compute",
    summary="computeStop",
    description=(
        "Stop a job: the algorithm is killed, its outputs so far and the logs are still published. Signed."
    ),
)
def compute_stop(params: ParamsDep, nonces: NonceStoreDep, operator: OperatorDep) -> JSONResponse:
    consumer, job_id = _signed_job_request(params, nonces)
    if not _owned_jobs(operator, consumer, job_id, None):
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"})
    try:
        record = operator.stop(job_id)
    except JobNotFound:
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"}) from None
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    return JSONResponse([_job_json(operator, record)])


@router.delete(
    "/compute",
    summary="computeDelete",
    description=(
        "Kept for Ocean clients: stops the job if it still runs; results expire with storageExpiry. Signed."
    ),
)
def compute_delete(params: ParamsDep, nonces: NonceStoreDep, operator: OperatorDep) -> JSONResponse:
    consumer, job_id = _signed_job_request(params, nonces)
    records = _owned_jobs(operator, consumer, job_id, None)
    if not records:
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"})
    if records[0].ended is None:
        try:
            records = [operator.stop(job_id)]
        except JobNotFound:
            raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"}) from None
        except BackendUnavailable as error:
            raise backend_error(f"compute backend unavailable: {error}") from None
    return JSONResponse([_job_json(operator, record) for record in records])


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@router.get(
    "/computeResult",
    summary="computeResult",
    description=(
        "Stream one result of a finished job by its index (owner only; `Range` honoured). "
        "Signed: keccak(consumerAddress + jobId + index + nonce)."
    ),
)
def compute_result(
    request: Request, params: ParamsDep, settings: SettingsDep, nonces: NonceStoreDep, operator: OperatorDep
) -> Response:
    index_text = str(params.get("index", ""))
    if not index_text.isdigit():
        raise field_errors({"index": "required: a result index, 0 or more"})
    consumer = str(params.get("consumerAddress") or "")
    job_id = str(params.get("jobId") or "")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", consumer) or not job_id:
        raise field_errors({"consumerAddress": "required", "jobId": "required"})
    if not params.get("nonce") or not params.get("signature"):
        raise field_errors({"signature": "required with its nonce"})
    verify_request(
        nonces, consumer, consumer + job_id + index_text, str(params["nonce"]), str(params["signature"])
    )
    records = _owned_jobs(operator, consumer, job_id, None)
    if not records:
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"})
    record = records[0]
    job = ocean_job_json(record)
    if "c2d/results" not in record.tags or job["status"] == JobStatus.PUBLISHING_RESULTS:
        if job["dateFinished"] is None:
            raise OceanHTTPError(409, {"error": "the results are not published yet: retry when the job ends"})
        # Ended without publishing (its run worker died, or it was stopped before publish).
        raise OceanHTTPError(404, {"error": f"job {job_id} ended without results: {job['statusText']}"})
    if record.tags.get(job_tags.RESULTS_EXPIRED) == "1":
        raise OceanHTTPError(410, {"error": EXPIRED})
    stores = result_stores(request, settings)
    entries = _manifest(stores, record)
    index = int(index_text)
    if index >= len(entries):
        raise OceanHTTPError(404, {"error": f"no result {index}: this job has {len(entries)}"})
    entry = entries[index]
    try:
        store = stores.for_location(entry.location)
    except LookupError as error:
        raise backend_error(str(error)) from None
    return _stream(store, entry, request.headers.get("range"))


EXPIRED = (
    "the job's results have expired: they are kept for the environment's storageExpiry after the job "
    "finished, then deleted"
)


def result_stores(request: Request, settings: SettingsDep) -> ResultStores:
    """Every store a manifest may point into: local (results_dir), and S3 / IPFS when `C2D_S3_*` /
    `C2D_IPFS_API_URL` configure them. Built once per app; their clients are reused."""
    stores = getattr(request.app.state, "result_stores", None)
    if stores is None:
        stores = ResultStores.from_env(os.environ, settings.results_dir)
        request.app.state.result_stores = stores
    return stores


def _manifest(stores: ResultStores, record: JobRecord) -> list[ResultEntry]:
    """The job's manifest, from where publish recorded it (`c2d/manifest`), else the local store."""
    location = record.tags.get(job_tags.MANIFEST) or f"{record.job_id}/{MANIFEST_NAME}"
    try:
        with stores.for_location(location).open(location) as handle:
            return [ResultEntry.model_validate(item) for item in json.load(handle)]
    except FileNotFoundError:
        # Published, yet gone from the store: deleted (expiry, an operator) before the run was tagged.
        raise OceanHTTPError(410, {"error": EXPIRED}) from None
    except LookupError as error:
        raise backend_error(str(error)) from None


def _stream(store: ResultStore, entry: ResultEntry, range_header: str | None) -> Response:
    start, end = 0, entry.filesize - 1
    status = 200
    headers = {
        "Content-Disposition": f'attachment; filename="{entry.filename}"',
        "Accept-Ranges": "bytes",
    }
    if range_header:
        match = _RANGE.match(range_header.strip())
        if not match or (not match.group(1) and not match.group(2)):
            raise OceanHTTPError(416, {"error": "unsupported Range: use bytes=start-end"})
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), end) if match.group(2) else end
        else:
            start = max(0, entry.filesize - int(match.group(2)))
        if start > end or start >= entry.filesize:
            raise OceanHTTPError(416, {"error": f"Range outside the result's {entry.filesize} bytes"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{entry.filesize}"
    length = end - start + 1 if entry.filesize else 0
    headers["Content-Length"] = str(length)

    # The first chunk is read before the response starts, so a result deleted underneath (expiry)
    # is a 410 and not a 200 that breaks off.
    chunks = store.read_range(entry.location, start, length)
    try:
        first = next(chunks, b"")
    except FileNotFoundError:
        raise OceanHTTPError(410, {"error": EXPIRED}) from None

    def body() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks

    return StreamingResponse(
        body(), status_code=status, headers=headers, media_type="application/octet-stream"
    )
