"""The queue watchdog: a job that waited too long in Dagster's run queue ends, with a clear status.

`maxJobs` per environment is enforced by the run queue (tag concurrency limits), so a busy
environment makes new jobs wait. With `C2D_MAX_QUEUE_WAIT` set (seconds; 0 = no limit) the sensor
below cancels every `compute_job` run still QUEUED that long after it was created, and tags it
`c2d/status=2` ("Job expired in queue") with a detail, so the Provider's job JSON reports a finished,
failed job instead of one that waits forever. The run never started: there is nothing to clean up.

A run the daemon dequeues in the same instant is not touched: only runs still QUEUED are marked
canceled (never terminated), and the tags are written only when the run ended canceled without
having started its first stage.
"""

from __future__ import annotations

import time
from datetime import UTC

import dagster as dg

from c2d_core import job_tags
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus

JOB_NAME = "compute_job"
RUNS_PER_TICK = 500


def _expired_detail(limit: int) -> str:
    return f"the job waited more than {limit} s in its environment's queue (C2D_MAX_QUEUE_WAIT) and was ended"


def expire_queued_runs(instance: dg.DagsterInstance, limit: int, now: float) -> list[str]:
    """Cancel compute runs queued for `limit` seconds or more and tag them status 2; their run ids."""
    if limit <= 0:
        return []
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=JOB_NAME, statuses=[dg.DagsterRunStatus.QUEUED]),
        limit=RUNS_PER_TICK,
        ascending=True,
    )
    expired = []
    for record in records:
        created = record.create_timestamp
        if created.tzinfo is None:  # run storage keeps UTC
            created = created.replace(tzinfo=UTC)
        if now - created.timestamp() < limit:
            break  # oldest first: the rest waited less
        run_id = record.dagster_run.run_id
        # Not the coordinator's cancel_run: for a run dequeued meanwhile it *terminates* the run,
        # which would stop a job that just started. Only a run still QUEUED is ended here.
        queued = instance.get_run_by_id(run_id)
        if queued is None or queued.status != dg.DagsterRunStatus.QUEUED:
            continue
        instance.report_run_canceling(queued, message="Queue wait limit reached (C2D_MAX_QUEUE_WAIT).")
        instance.report_run_canceled(queued)
        run = instance.get_run_by_id(run_id)
        if run is None or run.status != dg.DagsterRunStatus.CANCELED:
            continue  # dequeued meanwhile: it runs, and its own stages record its status
        if job_tags.phase_tag("configure", "started") in run.tags:
            continue
        instance.add_run_tags(
            run_id,
            {
                job_tags.STATUS: str(int(JobStatus.QUEUE_EXPIRED)),
                job_tags.STATUS_TEXT: JobStatus.QUEUE_EXPIRED.text,
                job_tags.STATUS_DETAIL: _expired_detail(limit),
                job_tags.DATE_FINISHED: str(time.time()),
            },
        )
        expired.append(run_id)
    return expired


@dg.sensor(
    description="End compute jobs that waited longer than C2D_MAX_QUEUE_WAIT in the queue (status 2).",
    minimum_interval_seconds=EngineSettings().watchdog_interval,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def queue_watchdog(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    limit = EngineSettings().max_queue_wait
    expired = expire_queued_runs(context.instance, limit, time.time())
    return dg.SkipReason(f"ended {len(expired)} job(s) that waited more than {limit} s in the queue")
