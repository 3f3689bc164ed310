"""computeStreamableLogs (Ocean Node's name): a running job's algorithm log, streamed to its owner.

The route parses and checks the request, spends its nonce (provider_api.live_logs verifies the
signature and the owner) and answers with a chunked text/plain stream that ends when the job ends.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from c2d_core.workflow import ADDRESS_PATTERN
from provider_api import schemas
from provider_api.deps import DagsterJobsDep, NonceStoreDep, ParamsDep, ResultStoresLaterDep
from provider_api.errors import OceanHTTPError, field_errors
from provider_api.live_logs import LiveLogRequest, live_log_stream, signed_live_log_job
from provider_api.params import job_id_param

router = APIRouter(prefix="/api/services", tags=["compute"])


def _request(params: dict[str, Any]) -> LiveLogRequest:
    """Every field checked (all field errors at once) before the signature is."""
    errors: dict[str, Any] = {}
    consumer, job_id = params.get("consumerAddress"), ""
    if not isinstance(consumer, str) or not ADDRESS_PATTERN.match(consumer):
        errors["consumerAddress"] = "required: the consumer's address"
    try:
        job_id = job_id_param(params, required=True) or ""
    except OceanHTTPError as error:
        errors.update(error.body["errors"])
    for name in ("nonce", "signature"):
        if not params.get(name):
            errors[name] = "required"
    if errors:
        raise field_errors(errors)
    return LiveLogRequest(str(consumer), job_id, str(params["nonce"]), str(params["signature"]))


@router.get(
    "/computeStreamableLogs",
    summary="computeStreamableLogs",
    response_class=StreamingResponse,
    openapi_extra=schemas.operation(query_model=schemas.ComputeStreamableLogsQuery),
    responses=schemas.responses(
        None, 400, 404, 503, content=schemas.TEXT, description="The algorithm's log as it grows (chunked)"
    ),
    description=(
        "The algorithm's log of a job while it runs (owner only): what it has written so far, then more "
        "as it comes, until the job ends. Bounded (1 MiB); the whole log comes with the results. "
        "Signed: keccak(consumerAddress + jobId + nonce)."
    ),
)
def compute_streamable_logs(
    params: ParamsDep, nonces: NonceStoreDep, jobs: DagsterJobsDep, stores: ResultStoresLaterDep
) -> StreamingResponse:
    record = signed_live_log_job(jobs, nonces, _request(params))
    return StreamingResponse(
        iter(live_log_stream(jobs, stores, record)),
        media_type="text/plain; charset=utf-8",
        # Proxies (nginx) must pass each chunk on as it comes, not hold the stream.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
