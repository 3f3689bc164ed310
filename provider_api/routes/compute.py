"""Ocean's compute routes: environments, initializeCompute, start / status / stop / delete, results.

Signed routes spend the request's nonce before anything else happens, so a replayed or reordered
request has no effect. Every response is built from run storage (through the operator) or from
the result store; no route ever returns a file location. Handlers are plain functions: FastAPI runs
them in its thread pool, so chain, database and GraphQL calls never block the event loop.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from c2d_core.ocean.signing import compute_result_message, compute_start_message, compute_stop_message
from c2d_core.settings import engine_settings
from provider_api import schemas
from provider_api.agreements import AgreementBusy, AgreementClaims, ClaimStoreUnavailable, run_holder
from provider_api.auth import verify_request
from provider_api.compute import (
    CheckedInput,
    ComputeService,
    InitializeRequest,
    StartRequest,
    checksum_address,
    parse_output,
    parse_request,
)
from provider_api.dagster_jobs import QUEUED_STATES, BackendUnavailable, JobConflict, JobNotFound
from provider_api.deps import ChainDep, DagsterJobsDep, EnvironmentsDep, NonceStoreDep, SettingsDep, shared
from provider_api.errors import OceanHTTPError, backend_error, bad_request, field_errors, resource_error
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.orders import OrderError, ensure_fee_paid, validate_order
from provider_api.params import BYTE_DIGITS, ParamsDep, agreement_id_param, job_id_param, number_param
from provider_api.result_files import stream_job_result

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
        # Our addition: seconds a job may wait in this environment's queue before it ends with
        # status 2 (the environment's maxQueueWait, else C2D_MAX_QUEUE_WAIT; 0 = no limit).
        "maxQueueWait": env.queue_wait_limit(engine_settings().max_queue_wait),
        "feeToken": service.fee_token_of(env),
        "allowNetwork": env.allow_network,
        "lastSeen": None,
    }


@router.get(
    "/computeEnvironments",
    summary="computeEnvironments",
    openapi_extra=schemas.operation(query_model=schemas.ChainIdQuery),
    responses=schemas.responses(dict[str, list[schemas.ComputeEnvironment]], 400, 503),
    description="The compute environments of each chain this Provider serves, with live job counts.",
)
def compute_environments(
    request: Request,
    params: ParamsDep,
    settings: SettingsDep,
    environments: EnvironmentsDep,
    operator: DagsterJobsDep,
    chain: ChainDep,
) -> JSONResponse:
    chain_id = number_param(params, "chainId", BYTE_DIGITS)
    if chain_id is not None and chain_id != settings.chain_id:
        return JSONResponse({str(chain_id): []})
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
    openapi_extra=schemas.operation(body_model=schemas.InitializeComputeBody),
    responses=schemas.responses(schemas.InitializeComputeResult, 400, 503),
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
    operator: DagsterJobsDep,
    claims: AgreementClaimsDep,
) -> JSONResponse:
    body = parse_request(StartRequest, params)
    # Like every field rule, a bad `output` is refused before the nonce is spent.
    output = parse_output(body.output, body.consumer_address, service.settings.address)
    verify_request(
        nonces,
        body.consumer_address,
        compute_start_message(body.consumer_address, body.dataset.document_id),
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
    workflow = service.build_workflow(body, env, inputs, algorithm, service.chain.chain_id, output)
    agreement = workflow.agreement_id
    try:
        # The claim makes "one unfinished job per agreement" hold across Provider replicas.
        if agreement:
            claims.claim(agreement, workflow.job_id, run_holder(operator))
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
def compute_status(params: ParamsDep, operator: DagsterJobsDep) -> JSONResponse:
    consumer = str(params.get("consumerAddress") or "")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", consumer):
        raise field_errors({"consumerAddress": "required: the consumer's address"})
    job_id = job_id_param(params, required=False)
    # As in Ocean's Provider, a jobId makes agreementId no filter (ocean.js sends both, the agreement
    # id without its 0x); alone, it is compared in its canonical form.
    agreement_id = None if job_id else agreement_id_param(params)
    records = _owned_jobs(operator, consumer, job_id, agreement_id)
    if job_id and not records:
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"})
    return JSONResponse([_job_json(operator, record) for record in records])


def _signed_job_request(params: dict[str, Any], nonces: Any) -> tuple[str, str | None, str | None]:
    """(consumer, jobId, agreementId) of a signed stop or delete, after the signature and nonce.

    The job is named by `jobId` (then `agreementId` is ignored, as on status) or, without one, by
    `agreementId` in its canonical form. Both are checked against their patterns before any lookup.
    """
    consumer = str(params.get("consumerAddress") or "")
    errors: dict[str, Any] = {}
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", consumer):
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
    message = compute_stop_message(consumer, job_id or "", str(params.get("documentId") or ""))
    verify_request(nonces, consumer, message, str(params["nonce"]), str(params["signature"]))
    return consumer, job_id, agreement_id


def _no_job(job_id: str | None, agreement_id: str | None) -> OceanHTTPError:
    named = f"job {job_id}" if job_id else f"job for agreement {agreement_id}"
    return OceanHTTPError(404, {"error": f"no {named} for this consumer"})


def _stop_owned(operator: Any, records: list[JobRecord]) -> list[JobRecord]:
    """Stop each of the consumer's jobs that has not ended (a stop of an ended one changes nothing)."""
    stopped = []
    for record in records:
        if record.ended is not None:
            stopped.append(record)
            continue
        try:
            stopped.append(operator.stop(record.job_id))
        except JobNotFound:
            continue  # gone in between: as if it had never been listed
        except BackendUnavailable as error:
            raise backend_error(f"compute backend unavailable: {error}") from None
    return stopped


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
def compute_stop(params: ParamsDep, nonces: NonceStoreDep, operator: DagsterJobsDep) -> JSONResponse:
    consumer, job_id, agreement_id = _signed_job_request(params, nonces)
    records = _owned_jobs(operator, consumer, job_id, agreement_id)
    if not records:
        raise _no_job(job_id, agreement_id)
    if job_id:
        try:
            records = [operator.stop(job_id)]
        except JobNotFound:
            raise _no_job(job_id, None) from None
        except BackendUnavailable as error:
            raise backend_error(f"compute backend unavailable: {error}") from None
    else:
        records = _stop_owned(operator, records)
    return JSONResponse([_job_json(operator, record) for record in records])


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
def compute_delete(params: ParamsDep, nonces: NonceStoreDep, operator: DagsterJobsDep) -> JSONResponse:
    consumer, job_id, agreement_id = _signed_job_request(params, nonces)
    records = _owned_jobs(operator, consumer, job_id, agreement_id)
    if not records:
        raise _no_job(job_id, agreement_id)
    records = _stop_owned(operator, records)
    if not records:
        raise _no_job(job_id, agreement_id)
    return JSONResponse([_job_json(operator, record) for record in records])


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
    settings: SettingsDep,
    nonces: NonceStoreDep,
    operator: DagsterJobsDep,
) -> Response:
    index = number_param(params, "index")
    if index is None:
        raise field_errors({"index": "required: a result index, 0 or more"})
    index_text = str(params["index"])  # signed as sent
    consumer = str(params.get("consumerAddress") or "")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", consumer):
        raise field_errors({"consumerAddress": "required: the consumer's address"})
    job_id = job_id_param(params, required=True)
    assert job_id is not None
    if not params.get("nonce") or not params.get("signature"):
        raise field_errors({"signature": "required with its nonce"})
    verify_request(
        nonces,
        consumer,
        compute_result_message(consumer, job_id, index_text),
        str(params["nonce"]),
        str(params["signature"]),
    )
    records = _owned_jobs(operator, consumer, job_id, None)
    if not records:
        raise _no_job(job_id, None)
    return stream_job_result(request, settings, records[0], index)
