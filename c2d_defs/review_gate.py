"""The review gate in the engine: park a job's results for an operator, and carry out the decision.

`park_for_review` is publish's last step for a job whose environment requires review (the contract
is in c2d_core.review): the publish pod has stored the outputs and logs under the job's held key, and
instead of ending the job this records status 55, the outcome the job would have had, and what is
held, then lets the run end. `decide` is the other half, run by `review_job` (approve, reject) and
`review_expiry_job` (expire) on the job's compute run: it copies what is released from the held key
to the job's own key (checking each sha256 on the way), writes the manifest the Provider serves,
signs the attestation (approval), records the decision and the final status with `dateFinished` in
one write, then deletes the held key. A decision cut short is taken again by a later run: until the
final write the job is still awaiting review and its held results are still there.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from c2d_core import engine, review
from c2d_core.results import MANIFEST_NAME, ResultEntry, ResultStore, manifest_document
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from c2d_defs.ops.attestation import attest_job
from c2d_defs.ops.recorder import JobRecorder, JobState, StageLog, record_results_asset
from c2d_defs.pods.report import ConfigureReport

# What a decision may be: an operator's two, and the expiry's.
Verdict = Literal["approve", "reject", "expire"]

# The review runs that may still (or did) decide on a job: a later one is refused while they stand.
DECIDING_STATES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.SUCCESS,
]


class ReviewRefused(Exception):
    """The decision may not be taken (a sentence an operator can act on)."""


# --- parking ----------------------------------------------------------------------------------------


def review_required(state: JobState, outputs_cleared: bool) -> bool:
    """Whether publish holds this job's results for an operator: its environment requires review, its
    algorithm ran (a job that never ran one holds nothing but the configure log), and the output
    stages let its outputs through (`outputs_cleared`: c2d_defs.ops.compute.outputs_cleared, true
    where the environment has none).

    The output stages judge before the gate. A job whose outputs they withheld (rejected, failed or
    never judged them) is not held: publish stores its logs only, there is nothing for a reviewer to
    release, and the job ends at once with the stages' failure (61), never reaching 55.
    """
    environment = state.environment
    return environment is not None and environment.review.required and state.algorithm_ran and outputs_cleared


def results_key(state: JobState, outputs_cleared: bool) -> str:
    """The result store key the publish pod stores this job's results under."""
    return review.held_key(state.job_id) if review_required(state, outputs_cleared) else state.job_id


def publish_env(state: JobState, outputs_cleared: bool) -> dict[str, str]:
    """What the publish pod is told about the key (nothing for a job that is not held)."""
    if not review_required(state, outputs_cleared):
        return {}
    return {"C2D_RESULTS_KEY": review.held_key(state.job_id)}


def park_for_review(recorder: JobRecorder, state: JobState, manifest: list[ResultEntry]) -> None:
    """Hold the job at 55 with its results under the held key; the run then ends without a final
    status, and neither the Provider nor the watchdog treats it as finished."""
    environment = state.environment
    assert environment is not None  # review_required checked it
    now = time.time()
    deadline = environment.review.deadline_seconds
    outcome = {"status": int(state.status), "detail": state.detail}
    public = [entry.public() for entry in manifest]
    tags = {
        review.STATE: "awaiting",
        review.REQUESTED_AT: f"{now:.3f}",
        review.OUTCOME: json.dumps(outcome, separators=(",", ":")),
        review.HELD: json.dumps(public, separators=(",", ":")),
        **({review.DEADLINE: f"{now + deadline:.3f}"} if deadline else {}),
    }
    if state.provisioned is not None and not state.provisioned.truncated:
        tags[review.PROVISIONED] = state.provisioned.model_dump_json(exclude_none=True)
    recorder.status(
        JobStatus.AWAITING_REVIEW,
        extra=tags,
        said=(
            f"status 55 Awaiting review: {len(public)} result(s) held for an operator's decision "
            + (f"within {deadline} s" if deadline else "(no deadline)")
            + " (review_job, or c2d admin review approve|reject)"
        ),
    )
    state.status = JobStatus.AWAITING_REVIEW


# --- finding the job ----------------------------------------------------------------------------------


def job_run(instance: dg.DagsterInstance, job_id: str) -> dg.DagsterRun | None:
    """The job's own compute run (the first of its job id that is not a re-execution or refused)."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=engine.JOB_NAME, tags={engine.JOB_ID: job_id}), limit=50
    )
    own = [record for record in records if engine.job_run(record.dagster_run.tags)]
    if not own:
        return None
    return min(own, key=lambda record: record.create_timestamp).dagster_run


def earlier_decider(instance: dg.DagsterInstance, job_id: str, run_id: str) -> str | None:
    """The id of another review run of `job_id`, created before `run_id`, that decides (or decided)
    on it; None when `run_id` is the first. Each review run tags itself before it asks, so of two
    racing runs the later one always sees the earlier."""
    records = instance.get_run_records(
        dg.RunsFilter(
            job_name=review.REVIEW_JOB_NAME, tags={review.REVIEW_JOB_ID: job_id}, statuses=DECIDING_STATES
        ),
        limit=50,
    )
    mine = instance.get_run_record_by_id(run_id)
    created = mine.create_timestamp if mine is not None else None
    for record in records:
        if record.dagster_run.run_id == run_id:
            continue
        if created is None or record.create_timestamp < created:
            return record.dagster_run.run_id
    return None


# --- deciding -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    status: JobStatus
    detail: str
    released: list[ResultEntry]


def _held_manifest(store: ResultStore, tags: Mapping[str, str], job_id: str) -> list[ResultEntry]:
    location = tags.get(engine.MANIFEST) or f"{review.held_key(job_id)}/{MANIFEST_NAME}"
    with store.open(location) as handle:
        return [ResultEntry.model_validate(item) for item in json.load(handle)]


def _release(store: ResultStore, job_id: str, entries: list[ResultEntry]) -> list[ResultEntry]:
    """Copy `entries` from the held key to the job's own, in order, re-indexed from 0."""
    released: list[ResultEntry] = []
    for entry in entries:
        with store.open(entry.location) as handle:
            stored = store.put(job_id, entry.filename, handle)
        if stored.sha256 != entry.sha256 or stored.size != entry.filesize:
            raise OSError(0, f"held result {entry.filename} changed while held (its sha256 differs)")
        released.append(
            ResultEntry(
                index=len(released),
                filename=entry.filename,
                filesize=stored.size,
                type=entry.type,
                sha256=stored.sha256,
                location=stored.location,
            )
        )
    return released


def decide(
    instance: dg.DagsterInstance,
    run_id: str,
    verdict: Verdict,
    *,
    reviewer: str,
    reason: str,
    store: ResultStore,
    settings: EngineSettings,
    log: StageLog,
    decision_run: str,
    release_logs: bool = True,
    release_algorithm_log: bool = False,
    now: float | None = None,
) -> Decided:
    """Carry out `verdict` on the held job of compute run `run_id`; ReviewRefused when it may not be."""
    now = time.time() if now is None else now
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ReviewRefused(f"no compute run {run_id}")
    tags = dict(run.tags)
    job_id = tags.get(engine.JOB_ID, "")
    view = review.ReviewView(tags)
    if verdict == "expire":
        if not view.awaiting or not view.expired(now):
            raise ReviewRefused(f"job {job_id} is not awaiting review past its deadline")
    else:
        problem = review.decision_problem(tags, verdict, now)
        if problem:
            raise ReviewRefused(problem)
    recorder = JobRecorder(instance, run_id, log)
    held = _held_manifest(store, tags, job_id)
    outcome_status, outcome_detail = view.outcome
    if verdict == "approve":
        keep = held
        status, detail = outcome_status, outcome_detail
    else:
        # The engine's own logs go back; the algorithm's log only when the reviewer, having read it,
        # says so: it is the algorithm's output too, and may carry what the outputs were held for.
        released_types = {"configurationLog", "publishLog"}
        if release_algorithm_log and verdict == "reject":
            released_types.add("algorithmLog")
        keep = [entry for entry in held if entry.type in released_types] if release_logs else []
        if verdict == "reject":
            status = JobStatus.REVIEW_REJECTED
            detail = f"the results were rejected by review: {reason}"
        else:
            status = JobStatus.REVIEW_EXPIRED
            detail = "no reviewer decided before the environment's review deadline"
        detail += "; the outputs were deleted" + (", the logs released" if keep else ", the logs withheld")
    released = _release(store, job_id, keep)
    manifest_location = store.put(job_id, MANIFEST_NAME, io.BytesIO(manifest_document(released))).location
    recorder.tags({engine.MANIFEST: manifest_location})
    finished_at = time.time()
    workflow = None
    try:
        workflow = engine.workflow_from_run_config(run.run_config)
    except ValueError:
        log.warning("the compute run holds no readable workflow: no attestation, no results asset")
    if verdict == "approve" and released:
        provisioned = (
            ConfigureReport.model_validate_json(tags[review.PROVISIONED])
            if review.PROVISIONED in tags
            else None
        )
        attested = attest_job(
            workflow=workflow,
            provisioned=provisioned,
            status=status,
            tags=tags,
            manifest=released,
            store=store,
            key_file=settings.resolved_provider_key_file,
            finished_at=finished_at,
            log=log,
        )
        if attested is not None:
            released.append(attested.entry)
            recorder.tags({engine.MANIFEST: attested.manifest_location})
    public = [entry.public() for entry in released]
    recorder.tags({engine.RESULTS: json.dumps(public, separators=(",", ":"))})
    if verdict == "approve" and workflow is not None:
        from c2d_core.result_assets import wants_results_asset

        if wants_results_asset(workflow):
            state = JobState(job_id=job_id, status=status, detail=detail, workflow=workflow)
            record_results_asset(recorder, state, released, settings)
    decision_tags = {
        review.STATE: {"approve": "approved", "reject": "rejected", "expire": "expired"}[verdict],
        review.DECIDED_BY: reviewer[:200],
        review.DECIDED_AT: f"{finished_at:.3f}",
        review.DECISION_RUN: decision_run,
        engine.DATE_FINISHED: f"{finished_at:.3f}",
        **({review.REASON: reason[:1000]} if reason else {}),
    }
    # The decision, the final status and dateFinished land in one write: no reader sees one without
    # the others.
    recorder.status(
        status,
        detail,
        extra=decision_tags,
        said=f"review: {verdict} by {reviewer}; job ends {int(status)} {status.text.strip()}"
        + (f": {detail}" if detail else ""),
    )
    store.delete_job(review.held_key(job_id))
    return Decided(status, detail, released)
