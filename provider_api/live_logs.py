"""computeStreamableLogs: the algorithm's log, streamed to the job's owner while the job runs.

The run worker keeps a live copy of the algorithm's log in the result store as it grows (bounded,
c2d_core.live_logs) and records its location on the run (the hidden tag `.dagster/c2d/live_log`);
this module finds it from the job's own tags, never from anything the client sent, and sends what was
added since the last read until the job has finished. The complete log comes with the results
(computeResult).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from c2d_core import engine
from c2d_core.live_logs import LIVE_LOG_CAP
from c2d_core.ocean.signing import compute_streamable_logs_message
from c2d_core.result_stores import ResultStores
from provider_api.auth import verify_request
from provider_api.consumer_jobs import no_job, owned_jobs
from provider_api.dagster_jobs import BackendUnavailable, DagsterJobs
from provider_api.jobs import JobRecord
from provider_api.nonces import NonceStore

# How often a stream looks for more of the log and for the job's end.
POLL_INTERVAL = 1.0
# One read of the live copy; it holds at most LIVE_LOG_CAP bytes and a line.
READ_CHUNK = 64 * 1024
# Consecutive failed reads of the job (the webserver down) after which the stream ends; the client
# can ask again, and the log still comes with the results.
MAX_BACKEND_MISSES = 30


@dataclass(frozen=True)
class LiveLogRequest:
    consumer: str
    job_id: str
    nonce: str
    signature: str


def signed_live_log_job(jobs: DagsterJobs, nonces: NonceStore, request: LiveLogRequest) -> JobRecord:
    """The consumer's job whose log a signed computeStreamableLogs asks for; 404 for any other job
    (another consumer's job is indistinguishable from a missing one, as on every route)."""
    message = compute_streamable_logs_message(request.consumer, request.job_id)
    verify_request(nonces, request.consumer, message, request.nonce, request.signature)
    records = owned_jobs(jobs, request.consumer, request.job_id, None)
    if not records:
        raise no_job(request.job_id, None)
    return records[0]


class LiveLogStream:
    """The bytes of the job's live algorithm log as they are added, until the job has finished.

    Iterated by Starlette in its thread pool (a sync generator), so the waits block no event loop.
    `sleep` and `refresh` are injected for tests; `refresh` reads the job again (None once gone).
    """

    def __init__(
        self,
        record: JobRecord,
        refresh: Callable[[], JobRecord | None],
        stores: Callable[[], ResultStores],
        *,
        interval: float = POLL_INTERVAL,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.record, self.refresh, self.stores = record, refresh, stores
        self.interval, self.sleep = interval, sleep
        self.offset = 0

    def __iter__(self) -> Iterator[bytes]:
        record: JobRecord | None = self.record
        misses = 0
        while record is not None:
            # Read before the log: what was added before the end is sent. A job held for review
            # has no more log to come (and the gate keeps its log off the live copy).
            done = record.finished or record.awaiting_review
            yield from self._read_new(record)
            if done or self.offset > LIVE_LOG_CAP + READ_CHUNK:
                return
            self.sleep(self.interval)
            try:
                record = self.refresh()
                misses = 0
            except BackendUnavailable:
                misses += 1
                if misses >= MAX_BACKEND_MISSES:
                    return

    def _read_new(self, record: JobRecord) -> Iterator[bytes]:
        location = record.tags.get(engine.LIVE_LOG)
        if not location:
            return  # the algorithm has not written anything yet (or never ran)
        try:
            store = self.stores().for_location(location)
            # The copy is only ever rewritten longer (same beginning), so an offset stays valid.
            for chunk in store.read_range(location, self.offset, READ_CHUNK * 16):
                if chunk:
                    self.offset += len(chunk)
                    yield chunk
        except Exception:
            # Any store's "no" means nothing new this time (the next poll retries): not stored yet,
            # gone with the job's expired results, or (S3) a range past its end.
            return


def live_log_stream(
    jobs: DagsterJobs, stores: Callable[[], ResultStores], record: JobRecord, interval: float = POLL_INTERVAL
) -> LiveLogStream:
    """The stream of `record`'s live log, re-reading the job from `jobs` between reads."""

    def refresh() -> JobRecord | None:
        return jobs.job(record.job_id)

    return LiveLogStream(record, refresh, stores, interval=interval)
