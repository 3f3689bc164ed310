"""Storage expiry: a job's results are deleted `storageExpiry` seconds after it finished.

The `results_expiry` sensor reads finished `compute_job` runs from run storage and asks for a
`results_expiry_job` run (c2d_defs.jobs) for those past their environment's `storageExpiry`. Its op
deletes their results through the `result_store` resource and tags each run
`.dagster/c2d/results_expired=1` (hidden), which the Provider turns into "expired" in the job JSON and
410 on download.
The tick itself deletes nothing: an S3 or IPFS stall costs a retried op, not a sensor timeout.
An environment with `storageExpiry: 0` keeps results until an operator deletes them.

The `review_expiry` sensor does the same for the review gate (c2d_core.review): a job still awaiting
review past its environment's `review.deadlineSeconds` is handed to `review_expiry_job`
(c2d_defs.jobs.review), which ends it 57 and deletes its held outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dagster as dg

from c2d_core import engine, review
from c2d_core.environments import UnknownEnvironmentError
from c2d_defs import maintenance
from c2d_defs.maintenance import act_on_each
from c2d_defs.resources import ComputeEnvironments

RESULTS_EXPIRY_JOB_NAME = "results_expiry_job"
RESULTS_EXPIRY_OP = "expire_results"
# Runs looked at per tick, newest first; a backlog drains over several ticks.
RUNS_PER_TICK = 1000
FINISHED_STATES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def expired_runs(
    runs: Iterable[Any], expiry_of: Callable[[str], int | None], now: float
) -> list[tuple[str, str]]:
    """(run id, job id) of finished runs whose results outlived their environment's storageExpiry."""
    expired = []
    for run in runs:
        tags = engine.JobTags.from_tags(run.tags)
        job_id = tags.job_id
        if not job_id or tags.results_expired:
            continue
        finished = tags.date_finished
        if finished is None:
            continue  # publish never recorded an end: nothing was published by this run
        expiry = expiry_of(tags.environment)
        if expiry and now - finished >= expiry:
            expired.append((run.run_id, job_id))
    return expired


def due_expiries(
    instance: dg.DagsterInstance,
    expiry_of: Callable[[str], int | None],
    now: float,
    run_ids: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """(run id, job id) of the finished compute runs whose results are due for deletion, newest
    first, at most RUNS_PER_TICK; only those of `run_ids` when given. Reads only."""
    if run_ids is not None and not run_ids:
        return []  # an empty run id filter would mean no filter at all
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=engine.JOB_NAME,
            statuses=FINISHED_STATES,
            run_ids=list(run_ids) if run_ids is not None else None,
        ),
        limit=RUNS_PER_TICK,
    )
    return expired_runs(runs, expiry_of, now)


def expire_results(
    instance: dg.DagsterInstance,
    store: Any,
    expiry_of: Callable[[str], int | None],
    now: float,
    run_ids: Sequence[str] | None = None,
    log: Any = None,
) -> list[str]:
    """Delete expired results and tag their runs (only those of `run_ids` when given); returns the
    job ids. Idempotent: a retried delete of what is gone already is a success. What the results
    expiry job's op runs."""

    def expire(item: tuple[str, str]) -> bool:
        run_id, job_id = item
        store.delete_job(job_id)
        # What a review decision cut short after its final write may have left under the held key.
        store.delete_job(review.held_key(job_id))
        instance.add_run_tags(run_id, {engine.RESULTS_EXPIRED: "1"})
        return True

    done = act_on_each(
        due_expiries(instance, expiry_of, now, run_ids), expire, lambda item: f"job {item[1]}", log
    )
    return [job_id for _, job_id in done]


def expiry_lookup(environments: ComputeEnvironments) -> Callable[[str], int | None]:
    """Each environment's storageExpiry; None (keep the results) for one it does not know."""

    def expiry_of(env_id: str) -> int | None:
        try:
            return environments.get(env_id).storage_expiry
        except UnknownEnvironmentError:
            return None  # an environment since removed: keep its results for an operator to decide

    return expiry_of


@dg.sensor(
    description="Ask results_expiry_job to delete job results older than their environment's "
    "storageExpiry and tag the runs expired.",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    job_name=RESULTS_EXPIRY_JOB_NAME,
)
def results_expiry(
    context: dg.SensorEvaluationContext, environments: ComputeEnvironments
) -> dg.RunRequest | dg.SkipReason:
    due = due_expiries(context.instance, expiry_lookup(environments), time.time())
    wanted = maintenance.request(
        context.instance,
        what="results_expiry",
        job_name=RESULTS_EXPIRY_JOB_NAME,
        op_name=RESULTS_EXPIRY_OP,
        targets=[run_id for run_id, _ in due],
        reason=f"the results of {len(due)} job(s) outlived their environment's storageExpiry",
    )
    if wanted is None:
        return maintenance.nothing_to_ask(
            f"{len(due)} job(s) have results past their storageExpiry", "expire"
        )
    return wanted


# --- the review gate's deadline ----------------------------------------------------------------------

REVIEW_EXPIRY_JOB_NAME = "review_expiry_job"
REVIEW_EXPIRY_OP = "expire_reviews"


def due_reviews(instance: dg.DagsterInstance, now: float) -> list[str]:
    """Run ids of the compute jobs awaiting review past their deadline (the deadline was fixed when
    the job was parked, from its environment's review.deadlineSeconds). Reads only."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=engine.JOB_NAME, tags={review.STATE: "awaiting"}), limit=RUNS_PER_TICK
    )
    return [
        run.run_id for run in runs if (view := review.ReviewView(run.tags)).awaiting and view.expired(now)
    ]


@dg.sensor(
    description="Ask review_expiry_job to end the jobs awaiting review past their environment's "
    "review deadline (status 57, held outputs deleted).",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    job_name=REVIEW_EXPIRY_JOB_NAME,
)
def review_expiry(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    due = due_reviews(context.instance, time.time())
    wanted = maintenance.request(
        context.instance,
        what="review_expiry",
        job_name=REVIEW_EXPIRY_JOB_NAME,
        op_name=REVIEW_EXPIRY_OP,
        targets=due,
        reason=f"{len(due)} job(s) awaited review past their environment's review deadline",
    )
    if wanted is None:
        return maintenance.nothing_to_ask(f"{len(due)} job(s) are past their review deadline", "expire")
    return wanted
