"""Streaming a job's results out of the result store: computeResult and a results asset's download.

Both routes read the same manifest and stream with the same code, so `Range`, `Content-Disposition`
and the expiry answers (410) cannot drift apart. No store location ever leaves this module: the
manifest's `location` picks the store and the object, and only bytes and the file name go out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

from fastapi.responses import Response, StreamingResponse

from c2d_core import engine
from c2d_core.result_stores import ResultStores
from c2d_core.results import MANIFEST_NAME, ResultEntry, ResultStore
from c2d_core.status import JobStatus
from provider_api.errors import OceanHTTPError, backend_error, bad_request
from provider_api.jobs import JobRecord, ocean_job_json
from provider_api.params import BYTE_DIGITS, NumberError, whole_number

EXPIRED = (
    "the job's results have expired: they are kept for the environment's storageExpiry after the job "
    "finished, then deleted"
)
# One range of bytes; the positions are read by `whole_number` (ASCII digits, bounded), not by `\d`,
# which matches every script's digits.
_RANGE = re.compile(r"bytes=([^,-]*)-([^,-]*)")


def read_job_manifest(stores: ResultStores, record: JobRecord) -> list[ResultEntry]:
    """The job's manifest, from where publish recorded it (`.dagster/c2d/manifest`), else the local
    store."""
    location = record.tags.get(engine.MANIFEST) or f"{record.job_id}/{MANIFEST_NAME}"
    try:
        with stores.for_location(location).open(location) as handle:
            return [ResultEntry.model_validate(item) for item in json.load(handle)]
    except FileNotFoundError:
        # Published, yet gone from the store: deleted (expiry, an operator) before the run was tagged.
        raise OceanHTTPError(410, {"error": EXPIRED}) from None
    except LookupError as error:
        raise backend_error(str(error)) from None


def ensure_results_published(record: JobRecord) -> None:
    """409 while the job's results are not stored yet, 404 if they never will be, 410 once expired."""
    job = ocean_job_json(record)
    if record.awaiting_review:
        raise OceanHTTPError(
            409, {"error": "the results are held for the operator's review: retry when the job ends"}
        )
    if engine.RESULTS not in record.tags or job["status"] == JobStatus.PUBLISHING_RESULTS:
        if job["dateFinished"] is None:
            raise OceanHTTPError(409, {"error": "the results are not published yet: retry when the job ends"})
        # Ended without publishing (its run worker died, or it was stopped before publish).
        raise OceanHTTPError(
            404, {"error": f"job {record.job_id} ended without results: {job['statusText']}"}
        )
    if record.tags.get(engine.RESULTS_EXPIRED) == "1":
        raise OceanHTTPError(410, {"error": EXPIRED})


def stream_job_result(
    result_stores: Callable[[], ResultStores], record: JobRecord, index: int, range_header: str | None
) -> Response:
    """Result `index` of the job, honouring `range_header`; 409 / 404 / 410 when it cannot be. The
    stores are built only once the job's results are there to read."""
    ensure_results_published(record)
    stores = result_stores()
    entries = read_job_manifest(stores, record)
    if index >= len(entries):
        raise OceanHTTPError(404, {"error": f"no result {index}: this job has {len(entries)}"})
    entry = entries[index]
    try:
        store = stores.for_location(entry.location)
    except LookupError as error:
        raise backend_error(str(error)) from None
    return stream_entry(store, entry, range_header)


def _range_position(text: str) -> int | None:
    """A byte position of a Range header (None when left out); 400 unless ASCII digits, bounded."""
    if not text:
        return None
    try:
        return whole_number(text, BYTE_DIGITS)
    except NumberError as error:
        raise bad_request(f"the Range header's byte positions {error}") from None


def stream_entry(store: ResultStore, entry: ResultEntry, range_header: str | None) -> Response:
    """One stored result as an attachment: 200 whole, or 206 for a single `bytes=` range."""
    start, end = 0, entry.filesize - 1
    status = 200
    headers = {
        "Content-Disposition": f'attachment; filename="{entry.filename}"',
        "Accept-Ranges": "bytes",
    }
    if range_header:
        match = _RANGE.fullmatch(range_header.strip())
        if not match or (not match.group(1) and not match.group(2)):
            raise OceanHTTPError(416, {"error": "unsupported Range: use bytes=start-end"})
        begin, final = (_range_position(text) for text in match.groups())
        if begin is not None:
            start = begin
            end = min(final, end) if final is not None else end
        else:
            assert final is not None  # the match needs one of the two
            start = max(0, entry.filesize - final)
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
