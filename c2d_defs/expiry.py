"""Storage expiry: a job's results are deleted `storageExpiry` seconds after it finished.

The sensor reads finished `compute_job` runs from run storage, deletes the results of those past their
environment's `storageExpiry` through the `result_store` resource, and tags the run
`c2d/results_expired=1`, which the Provider turns into "expired" in the job JSON and 410 on download.
An environment with `storageExpiry: 0` keeps results until an operator deletes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import dagster as dg

from c2d_core import job_tags
from c2d_core.environments import UnknownEnvironmentError
from c2d_defs.resources import ComputeEnvironments, ResultStoreResource

# Runs looked at per tick, newest first; a backlog drains over several ticks.
RUNS_PER_TICK = 1000
FINISHED_STATES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def expired_runs(
    runs: Iterable[Any], expiry_of: Callable[[str], int | None], now: float
) -> list[tuple[str, str]]:
    """(run id, job id) of finished runs whose results outlived their environment's storageExpiry."""
    expired = []
    for run in runs:
        tags = run.tags or {}
        job_id = tags.get(job_tags.JOB_ID)
        if not job_id or tags.get(job_tags.RESULTS_EXPIRED) == "1":
            continue
        try:
            finished = float(tags[job_tags.DATE_FINISHED])
        except (KeyError, ValueError):
            continue  # publish never recorded an end: nothing was published by this run
        expiry = expiry_of(tags.get(job_tags.ENVIRONMENT, ""))
        if expiry and now - finished >= expiry:
            expired.append((run.run_id, job_id))
    return expired


def expire_results(
    instance: dg.DagsterInstance,
    store: Any,
    expiry_of: Callable[[str], int | None],
    now: float,
) -> list[str]:
    """Delete expired results and tag their runs; returns the job ids. Idempotent: a retried delete
    of what is gone already is a success."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name="compute_job", statuses=FINISHED_STATES), limit=RUNS_PER_TICK
    )
    done = []
    for run_id, job_id in expired_runs(runs, expiry_of, now):
        store.delete_job(job_id)
        instance.add_run_tags(run_id, {job_tags.RESULTS_EXPIRED: "1"})
        done.append(job_id)
    return done


@dg.sensor(
    description="Delete job results older than their environment's storageExpiry; tag the run expired.",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def results_expiry(
    context: dg.SensorEvaluationContext,
    result_store: ResultStoreResource,
    environments: ComputeEnvironments,
) -> dg.SkipReason:
    def expiry_of(env_id: str) -> int | None:
        try:
            return environments.get(env_id).storage_expiry
        except UnknownEnvironmentError:
            return None  # an environment since removed: keep its results for an operator to decide

    expired = expire_results(context.instance, result_store.store(), expiry_of, time.time())
    return dg.SkipReason(f"expired the results of {len(expired)} job(s)")
