"""A consumer's own jobs: status, stop and delete, and the job a signed computeResult reads.

Jobs are Dagster runs read through `DagsterJobs`; a consumer sees only runs tagged with its address,
and another consumer's job is indistinguishable from a missing one. Signed requests spend their
nonce before any lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from c2d_core.ocean.signing import compute_result_message, compute_stop_message
from provider_api.auth import verify_request
from provider_api.compute import checksum_address
from provider_api.dagster_jobs import QUEUED_STATES, BackendUnavailable, DagsterJobs, JobNotFound
from provider_api.errors import OceanHTTPError, backend_error
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.nonces import NonceStore


@dataclass(frozen=True)
class SignedJobRequest:
    """A signed stop or delete, its fields checked: the job by `job_id` or, without one, `agreement_id`."""

    consumer: str
    job_id: str | None
    agreement_id: str | None
    document_id: str
    nonce: str
    signature: str


def job_json(jobs: DagsterJobs, record: JobRecord) -> dict[str, Any]:
    """Ocean's job JSON plus `queuePosition`: 1 for the next queued job of its environment, null
    when the job is not waiting in the queue (one extra count query per queued job)."""
    job = ocean_job_json(record)
    position = None
    if record.run_status in QUEUED_STATES:
        try:
            position = jobs.queue_position(record)
        except BackendUnavailable:
            position = None  # the status itself was read; the position is best effort
    job["queuePosition"] = position
    return job


def owned_jobs(
    jobs: DagsterJobs, consumer: str, job_id: str | None, agreement_id: str | None
) -> list[JobRecord]:
    """The consumer's jobs; another consumer's job is indistinguishable from a missing one."""
    try:
        if job_id or agreement_id:
            records = jobs.jobs(owner=None, job_id=job_id, agreement_id=agreement_id)
        else:
            records = jobs.jobs(owner=checksum_address(consumer), job_id=None, agreement_id=None)
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    return [record for record in records if record.owner.lower() == consumer.lower()]


def no_job(job_id: str | None, agreement_id: str | None) -> OceanHTTPError:
    named = f"job {job_id}" if job_id else f"job for agreement {agreement_id}"
    return OceanHTTPError(404, {"error": f"no {named} for this consumer"})


def status(
    jobs: DagsterJobs, consumer: str, job_id: str | None, agreement_id: str | None
) -> list[dict[str, Any]]:
    """computeStatus: the consumer's jobs (one job, one agreement's, or all), as job JSON."""
    records = owned_jobs(jobs, consumer, job_id, agreement_id)
    if job_id and not records:
        raise OceanHTTPError(404, {"error": f"no job {job_id} for this consumer"})
    return [job_json(jobs, record) for record in records]


def _verify(nonces: NonceStore, request: SignedJobRequest) -> None:
    message = compute_stop_message(request.consumer, request.job_id or "", request.document_id)
    verify_request(nonces, request.consumer, message, request.nonce, request.signature)


def _stop_owned(jobs: DagsterJobs, records: list[JobRecord], consumer: str) -> list[JobRecord]:
    """Stop each of the consumer's jobs that has not ended (a stop of an ended one changes nothing)."""
    stopped = []
    for record in records:
        if record.ended is not None:
            stopped.append(record)
            continue
        try:
            stopped.append(jobs.stop(record.job_id, by=checksum_address(consumer)))
        except JobNotFound:
            continue  # gone in between: as if it had never been listed
        except BackendUnavailable as error:
            raise backend_error(f"compute backend unavailable: {error}") from None
    return stopped


def stop(jobs: DagsterJobs, nonces: NonceStore, request: SignedJobRequest) -> list[dict[str, Any]]:
    """computeStop: stop the named job (or the agreement's unfinished ones), as job JSON."""
    _verify(nonces, request)
    job_id, agreement_id = request.job_id, request.agreement_id
    records = owned_jobs(jobs, request.consumer, job_id, agreement_id)
    if not records:
        raise no_job(job_id, agreement_id)
    if job_id:
        try:
            records = [jobs.stop(job_id, by=checksum_address(request.consumer))]
        except JobNotFound:
            raise no_job(job_id, None) from None
        except BackendUnavailable as error:
            raise backend_error(f"compute backend unavailable: {error}") from None
    else:
        records = _stop_owned(jobs, records, request.consumer)
    return [job_json(jobs, record) for record in records]


def delete(jobs: DagsterJobs, nonces: NonceStore, request: SignedJobRequest) -> list[dict[str, Any]]:
    """computeDelete, kept for Ocean's clients: stops what still runs; results expire on their own."""
    _verify(nonces, request)
    job_id, agreement_id = request.job_id, request.agreement_id
    records = owned_jobs(jobs, request.consumer, job_id, agreement_id)
    if not records:
        raise no_job(job_id, agreement_id)
    records = _stop_owned(jobs, records, request.consumer)
    if not records:
        raise no_job(job_id, agreement_id)
    return [job_json(jobs, record) for record in records]


def signed_result_job(
    jobs: DagsterJobs,
    nonces: NonceStore,
    *,
    consumer: str,
    job_id: str,
    index_text: str,
    nonce: str,
    signature: str,
) -> JobRecord:
    """The consumer's job whose result a signed computeResult asks for (the index signed as sent)."""
    verify_request(nonces, consumer, compute_result_message(consumer, job_id, index_text), nonce, signature)
    records = owned_jobs(jobs, consumer, job_id, None)
    if not records:
        raise no_job(job_id, None)
    # A download reads the run as it is now, not as the status cache last saw it: storage expiry
    # (or the stage watchdog) may have changed a finished job since.
    try:
        fresh = jobs.job(records[0].job_id, fresh=True)
    except BackendUnavailable as error:
        raise backend_error(f"compute backend unavailable: {error}") from None
    return fresh if fresh is not None else records[0]
