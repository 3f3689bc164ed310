"""The queue watchdog: a job that waited too long in Dagster's run queue ends, with a clear status.

`maxJobs` per environment is enforced by the run queue (tag concurrency limits), so a busy
environment makes new jobs wait. With a queue wait limit (the environment's `maxQueueWait`, else
`C2D_MAX_QUEUE_WAIT`; seconds, 0 = no limit) the sensor below cancels every `compute_job` run still
QUEUED that long after it was created, and tags it
`c2d/status=2` ("Job expired in queue") with a detail, so the Provider's job JSON reports a finished,
failed job instead of one that waits forever. The run never started: there is nothing to clean up.

A run the daemon dequeues in the same instant is not touched: only runs still QUEUED are marked
canceling, then canceled (never terminated), and the tags are written (before the run's end) only
when the run is still canceling without having started its first stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC

import dagster as dg

from c2d_core import job_tags
from c2d_core.environments import Environments, UnknownEnvironmentError
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from c2d_defs.resources import ComputeEnvironments

JOB_NAME = "compute_job"
RUNS_PER_TICK = 500


def _expired_detail(limit: int, env_id: str) -> str:
    return (
        f"the job waited more than {limit} s in the queue of environment {env_id} "
        "(its maxQueueWait, else C2D_MAX_QUEUE_WAIT) and was ended"
    )


def expire_queued_runs(instance: dg.DagsterInstance, limit_of: Callable[[str], int], now: float) -> list[str]:
    """Cancel compute runs queued for their environment's limit or longer (`limit_of(env id)`, 0 =
    no limit) and tag them status 2; their run ids."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME, statuses=[dg.DagsterRunStatus.QUEUED]),
        limit=RUNS_PER_TICK,
        ascending=True,
    )
    expired = []
    for record in records:
        env_id = record.dagster_run.tags.get(job_tags.ENVIRONMENT, "")
        limit = limit_of(env_id)
        created = record.create_timestamp
        if created.tzinfo is None:  # run storage keeps UTC
            created = created.replace(tzinfo=UTC)
        if limit <= 0 or now - created.timestamp() < limit:
            continue  # limits differ per environment: an older run may wait longer than this one
        run_id = record.dagster_run.run_id
        # Not the coordinator's cancel_run: for a run dequeued meanwhile it *terminates* the run,
        # which would stop a job that just started. Only a run still QUEUED is ended here.
        queued = instance.get_run_by_id(run_id)
        if queued is None or queued.status != dg.DagsterRunStatus.QUEUED:
            continue
        instance.report_run_canceling(queued, message=f"Queue wait limit of {limit} s reached.")
        run = instance.get_run_by_id(run_id)
        if run is None or run.status != dg.DagsterRunStatus.CANCELING:
            continue  # dequeued meanwhile: it runs, and its own stages record its status
        if job_tags.phase_tag("configure", "started") in run.tags:
            continue
        # Status 2 first, then the run's end: a reader never sees the run ended without its status
        # (the Provider would report an ended run without one as stopped).
        instance.add_run_tags(
            run_id,
            {
                job_tags.STATUS: str(int(JobStatus.QUEUE_EXPIRED)),
                job_tags.STATUS_TEXT: JobStatus.QUEUE_EXPIRED.text,
                job_tags.STATUS_DETAIL: _expired_detail(limit, env_id),
                job_tags.DATE_FINISHED: str(time.time()),
            },
        )
        instance.report_run_canceled(run)
        expired.append(run_id)
    return expired


def queue_wait_limits(environments: Environments, default: int) -> Callable[[str], int]:
    """Each environment's queue wait limit; `default` (C2D_MAX_QUEUE_WAIT) for one it does not know."""

    def limit_of(env_id: str) -> int:
        try:
            return environments.get(env_id).queue_wait_limit(default)
        except UnknownEnvironmentError:
            return default

    return limit_of


@dg.sensor(
    description="End compute jobs that waited longer than their environment's maxQueueWait "
    "(else C2D_MAX_QUEUE_WAIT) in the queue (status 2).",
    minimum_interval_seconds=EngineSettings().watchdog_interval,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def queue_watchdog(context: dg.SensorEvaluationContext, environments: ComputeEnvironments) -> dg.SkipReason:
    limit_of = queue_wait_limits(environments.load(), EngineSettings().max_queue_wait)
    expired = expire_queued_runs(context.instance, limit_of, time.time())
    return dg.SkipReason(f"ended {len(expired)} job(s) that waited past their queue wait limit")
