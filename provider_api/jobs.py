"""A compute job as the Provider reads it from Dagster run storage, and its Ocean job JSON.

`JobRecord` is one `compute_job` run: its Dagster status, tags (see c2d_core.engine) and times.
`ocean_job_json` turns it into the status object Ocean's clients parse, plus our own keys.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from c2d_core import engine, review
from c2d_core.settings import engine_settings
from c2d_core.status import JobStatus
from provider_api.errors import strip_urls

# Dagster run states in which the run worker is gone for good.
ENDED_RUN_STATES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
# A terminate request (the Provider's stop, an operator in the Dagster UI, the stage watchdog, run
# monitoring at the run's max_runtime) puts a run in these states; `_stopreq` tells them apart.
CANCELED_RUN_STATES = frozenset({"CANCELING", "CANCELED"})

PHASES = ("configure", "algorithm", "filter", "publish")
# Shown only for a job that entered it: an environment without output stages has no filter phase.
OPTIONAL_PHASES = frozenset({"filter"})


@functools.cache
def _watchdog_wait_seconds() -> float:
    """How long after a run's end the stage watchdog surely has judged it: two of its ticks plus a
    margin for a busy daemon (the engine's C2D_WATCHDOG_INTERVAL, which the Provider shares)."""
    return 2 * engine_settings().watchdog_interval + 30


# The keys of a result entry a consumer sees: Ocean's, plus the `index` it downloads by.
PUBLIC_RESULT_KEYS = ("filename", "filesize", "type", "index")


@dataclass(frozen=True)
class JobRecord:
    run_id: str
    run_status: str
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    ended: float | None = None
    started: float | None = None  # when the run worker started: `dagster/max_runtime` counts from it
    # When the run was asked to cancel, for a run canceled without a consumer's stop record (an
    # operator's terminate); read from the run's event log, None when not looked up or not found.
    canceled_at: float | None = None

    @property
    def job_id(self) -> str:
        return self.tags.get(engine.JOB_ID, "")

    @property
    def owner(self) -> str:
        return self.tags.get(engine.OWNER, "")

    @property
    def agreement_id(self) -> str:
        return self.tags.get(engine.AGREEMENT_ID, "")

    @property
    def environment(self) -> str:
        return self.tags.get(engine.ENVIRONMENT, "")

    @property
    def run_ended(self) -> bool:
        return self.run_status in ENDED_RUN_STATES

    @property
    def published(self) -> bool:
        """Publish's last word is written: the job has its final status, results and finish time."""
        return engine.DATE_FINISHED in self.tags

    @property
    def awaiting_review(self) -> bool:
        """Parked by the review gate (status 55, c2d_core.review): its run ended, its results are held
        until an operator decides; to Ocean's clients a running job (no dateFinished)."""
        return review.ReviewView(self.tags).awaiting

    @property
    def salvaging(self) -> bool:
        """The run ended without publishing and the stage watchdog has taken the job over (or will
        at its next tick): its salvage run is yet to publish the logs and outputs and write the final
        status."""
        if not self.run_ended or self.published or self.awaiting_review:
            return False
        return engine.WATCHDOG in self.tags or self._awaiting_watchdog

    @property
    def _awaiting_watchdog(self) -> bool:
        """Ended after a stage started, not yet judged, and recently enough that the stage watchdog
        has not had its tick: it will take the job over, so the job is not reported finished (with
        no logs) in between. Past the wait (the daemon down, say) the job is reported as ended."""
        started_a_stage = engine.phase_tag("configure", "started") in self.tags
        return (
            started_a_stage and self.ended is not None and time.time() - self.ended < _watchdog_wait_seconds()
        )

    @property
    def finished(self) -> bool:
        """Ocean's "finished" (`dateFinished` set): nothing more will happen to this job."""
        return self.published or (self.run_ended and not self.salvaging and not self.awaiting_review)

    @property
    def ended_by_engine(self) -> bool:
        """Terminated by the engine (the stage watchdog, the queue watchdog, the run's max_runtime),
        not by a stop request."""
        if engine.WATCHDOG in self.tags or _tag_status(self.tags) is JobStatus.QUEUE_EXPIRED:
            return True
        # Run monitoring ends a run past its max_runtime (terminate, then FAILURE) without tagging it.
        now = self.ended if self.ended is not None else time.time()
        return engine.past_max_runtime(self.tags, self.started, now)


def _epoch(value: float | None) -> str | None:
    """Epoch seconds as Ocean sends them: a decimal string, e.g. "1629281470.08931"."""
    if value is None or not math.isfinite(value):
        return None
    return str(round(value, 6))


def _tag_epoch(tags: dict[str, str], key: str) -> str | None:
    try:
        return _epoch(float(tags[key]))
    except (KeyError, ValueError):
        return None


def _tag_status(tags: dict[str, str]) -> JobStatus:
    try:
        return JobStatus(int(tags.get(engine.STATUS, "")))
    except ValueError:
        return JobStatus.WARMING_UP


def _unfinished_end(status: JobStatus) -> JobStatus:
    """The failure status of a run that ended before the engine recorded a final one.

    Named for what did not happen: the inputs were never provisioned (31), the algorithm never ran to
    its end (41), or the results were never uploaded (62).
    """
    if status in (JobStatus.WARMING_UP, JobStatus.JOB_STARTED, JobStatus.CONFIGURING_VOLUMES):
        return JobStatus.DATA_PROVISIONING_FAILED
    if status is JobStatus.PUBLISHING_RESULTS:
        return JobStatus.RESULTS_UPLOAD_FAILED
    return JobStatus.ALGORITHM_FAILED


def _unfinished_detail(record: JobRecord, was: JobStatus) -> str:
    where = "before it started" if was is JobStatus.WARMING_UP else f"at status {int(was)} {was.text.strip()}"
    if record.run_status == "CANCELED" and _stopreq(record) == 1:
        return f"job stopped on request {where}"
    return f"the engine ended the job {where} without a final status (run {record.run_status})"


def _results(tags: dict[str, str]) -> list[dict[str, Any]] | str:
    raw = tags.get(engine.RESULTS)
    if raw is None:
        return ""
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError:
        return ""
    public = [
        {key: entry[key] for key in PUBLIC_RESULT_KEYS if key in entry}
        for entry in entries
        if isinstance(entry, dict)
    ]
    # Ocean sends "" rather than an empty list when a job has no results.
    return public or ""


def _stopreq(record: JobRecord) -> int:
    """Ocean's stopreq: 1 for a consumer's (or operator's) stop, 2 for an algorithm past its deadline.

    The engine tags a stop its stage op caught (engine.STOP_REQUESTED); a stop caught while queued or
    between ops shows as the run's CANCELING / CANCELED state. That state counts as a stop, whoever
    asked (`_stopped` says who), unless the engine terminated the run (`ended_by_engine`): the
    watchdogs' tags, the queue-expired status, a run past its max_runtime.
    """
    termination = record.tags.get(engine.ALGORITHM_TERMINATION)
    if record.tags.get(engine.STOP_REQUESTED) == "1" or termination == "Stopped":
        return 1
    if termination == "DeadlineExceeded":
        return 2
    if record.run_status in CANCELED_RUN_STATES and not record.ended_by_engine:
        return 1
    return 0


def _stopped(record: JobRecord, stopreq: int) -> tuple[str | None, str | None]:
    """(`stoppedBy`, `stoppedAt`) of a stopped job (Ocean's stopreq 1), else (None, None).

    "consumer": the Provider recorded the consumer's stop on the run (engine.STOPPED_BY, STOPPED_AT)
    just before it terminated it. "operator": the run was terminated without that record, from the
    Dagster UI or its GraphQL API; its time is the run's first cancel event. An end by the engine
    (a watchdog, the run's max_runtime) is no stop and has neither.
    """
    if stopreq != 1:
        return None, None
    if record.tags.get(engine.STOPPED_BY):
        return "consumer", _tag_epoch(record.tags, engine.STOPPED_AT)
    return "operator", _epoch(record.canceled_at)


def _int_tag(tags: dict[str, str], key: str) -> int | None:
    try:
        return int(tags[key])
    except (KeyError, ValueError):
        return None


def _input_dids(tags: dict[str, str]) -> list[str]:
    try:
        dids = json.loads(tags.get(engine.INPUT_DIDS, "[]"))
    except json.JSONDecodeError:
        dids = []
    if isinstance(dids, list) and dids:
        return [str(did) for did in dids]
    return [tags[engine.DID]] if engine.DID in tags else []


RESULTS_ASSET_STATES = frozenset({"pending", "published", "failed", "skipped"})


def _results_asset(record: JobRecord) -> dict[str, str] | None:
    """How publishing the results as an asset went, for a job that asked for it; else None.

    The engine writes the outcome (`.dagster/c2d/results_asset`) when its publish step ends. Before
    that the asset is pending, unless the run already ended: then it will never be published.
    """
    tags = record.tags
    raw = tags.get(engine.RESULTS_ASSET)
    if raw is not None:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and value.get("status") in RESULTS_ASSET_STATES:
            return {"status": str(value["status"]), "detail": str(value.get("detail") or "")}
        return {"status": "failed", "detail": "the engine recorded an unreadable outcome"}
    if tags.get(engine.OUTPUT_REQUESTED) != "1":
        return None
    if record.run_ended and not record.salvaging:
        return {"status": "failed", "detail": "the job ended before its results were published as an asset"}
    return {"status": "pending", "detail": "published as an asset once the results are stored"}


def ocean_job_json(record: JobRecord) -> dict[str, Any]:
    """Ocean's job status object for `record`, plus `statusDetail`, `phases`, `terminationDetails`,
    `runStatus`, `resultsDid`, `stoppedBy`, `stoppedAt` and (when the job asked to publish its
    results) `resultsAsset`.

    A run the stage watchdog took over (`.dagster/c2d/watchdog`, no finish date yet) is still
    publishing: its salvage run publishes the logs and outputs, then writes the final status and
    finish date. Until then the job is 60 "Publishing results" with the watchdog's detail and no
    `dateFinished`, so a client keeps polling and then finds the results (computeResult answers 409
    meanwhile).
    Any other run that ended without publish's final word is reported as finished with a failure
    status, so no client waits forever. A stopped job keeps Ocean's marker `stopreq: 1`: its status
    is 70 if publish still ran, else the failure status of the stage it was stopped in.
    `statusDetail` is URL-filtered like every error: it must never carry an endpoint.
    """
    tags = record.tags
    status = _tag_status(tags)
    detail = tags.get(engine.STATUS_DETAIL, "")
    date_finished = _tag_epoch(tags, engine.DATE_FINISHED)
    if record.salvaging:
        detail = (
            tags.get(engine.WATCHDOG) or "the job's run ended before publishing: its logs are being published"
        )
        status, date_finished = JobStatus.PUBLISHING_RESULTS, None
    elif record.awaiting_review:
        # 55 "Awaiting review" (ours, outside Ocean's codes) with no dateFinished: Ocean's clients
        # keep polling, as for any job still running; computeResult answers 409 meanwhile.
        status, date_finished = JobStatus.AWAITING_REVIEW, None
    elif record.run_ended and not record.published:
        if not status.is_terminal:
            was = status
            status = _unfinished_end(was)
            detail = _unfinished_detail(record, was)
        date_finished = _epoch(record.ended if record.ended is not None else record.created)
    termination = tags.get(engine.ALGORITHM_TERMINATION)
    stopreq = _stopreq(record)
    stopped_by, stopped_at = _stopped(record, stopreq)
    return {
        "agreementId": record.agreement_id,
        "jobId": record.job_id,
        "owner": record.owner,
        "status": int(status),
        "statusText": status.text,
        "dateCreated": _epoch(record.created),
        "dateFinished": date_finished,
        "results": _results(tags),
        "stopreq": stopreq,
        # Our own keys: who stopped the job ("consumer" or "operator", null when nobody did) and when.
        "stoppedBy": stopped_by,
        "stoppedAt": stopped_at,
        "removed": 0,
        # Our own key: storage expiry deleted the results (computeResult answers 410).
        "resultsExpired": tags.get(engine.RESULTS_EXPIRED) == "1",
        "algoDID": tags.get(engine.ALGO_DID, "raw"),
        "inputDID": _input_dids(tags),
        # Our own keys (issue 8): the DID of the asset the results were published as ("" if none),
        # and, for a job that asked for one, how publishing it went.
        "resultsDid": tags.get(engine.RESULTS_DID, ""),
        **({"resultsAsset": asset} if (asset := _results_asset(record)) is not None else {}),
        "statusDetail": strip_urls(detail),
        "phases": {
            phase: {
                "started": _tag_epoch(tags, engine.phase_tag(phase, "started")),
                "finished": _tag_epoch(tags, engine.phase_tag(phase, "finished")),
            }
            for phase in PHASES
            if phase not in OPTIONAL_PHASES or engine.phase_tag(phase, "started") in tags
        },
        "terminationDetails": {
            "exitCode": _int_tag(tags, engine.ALGORITHM_EXIT_CODE),
            "OOMKilled": termination == "OOMKilled",
            "reason": termination,
        },
        "runStatus": record.run_status,
    }
