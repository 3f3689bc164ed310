"""The queue watchdog: a job that waited too long in Dagster's run queue ends, with a clear status.

`maxJobs` per environment is enforced by the run queue (tag concurrency limits), so a busy
environment makes new jobs wait. With a queue wait limit (the environment's `maxQueueWait`, else
`C2D_MAX_QUEUE_WAIT`; seconds, 0 = no limit) the sensor below finds every `compute_job` run still
QUEUED that long after it was created and asks for a `queue_expiry_job` run (c2d_defs.jobs), whose op
cancels each one and tags it `c2d/status=2` ("Job expired in queue") with a detail, so the Provider's
job JSON reports a finished, failed job instead of one that waits forever. The run never started:
there is nothing to clean up. The tick only reads: an API or database stall costs a retried op, not
a sensor timeout.

A run the daemon dequeues in the same instant is not touched: only runs still QUEUED are marked
canceling, then canceled (never terminated), and the tags are written (before the run's end) only
when the run is still canceling without having started its first stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import dagster as dg

from c2d_core import engine
from c2d_core.environments import Environments, UnknownEnvironmentError
from c2d_core.settings import DEFAULT_WATCHDOG_INTERVAL, engine_settings
from c2d_core.status import JobStatus, Stage
from c2d_defs import maintenance
from c2d_defs.maintenance import act_on_each
from c2d_defs.resources import ComputeEnvironments

QUEUE_EXPIRY_JOB_NAME = "queue_expiry_job"
QUEUE_EXPIRY_OP = "expire_queued"
RUNS_PER_TICK = 500


def _expired_detail(limit: int, env_id: str) -> str:
    return (
        f"the job waited more than {limit} s in the queue of environment {env_id} "
        "(its maxQueueWait, else C2D_MAX_QUEUE_WAIT) and was ended"
    )


@dataclass(frozen=True)
class QueueExpiry:
    """A compute run that waited its environment's queue wait limit (seconds) or longer."""

    run_id: str
    env_id: str
    limit: int


def due_queued_runs(
    instance: dg.DagsterInstance,
    limit_of: Callable[[str], int],
    now: float,
    run_ids: Sequence[str] | None = None,
) -> list[QueueExpiry]:
    """Compute runs still QUEUED for their environment's limit or longer (`limit_of(env id)`, 0 =
    no limit), oldest first; only those of `run_ids` when given. Reads only."""
    if run_ids is not None and not run_ids:
        return []  # an empty run id filter would mean no filter at all
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=engine.JOB_NAME,
            statuses=[dg.DagsterRunStatus.QUEUED],
            run_ids=list(run_ids) if run_ids is not None else None,
        ),
        limit=RUNS_PER_TICK,
        ascending=True,
    )
    due = []
    for record in records:
        env_id = record.dagster_run.tags.get(engine.ENVIRONMENT, "")
        limit = limit_of(env_id)
        created = record.create_timestamp
        if created.tzinfo is None:  # run storage keeps UTC
            created = created.replace(tzinfo=UTC)
        if limit <= 0 or now - created.timestamp() < limit:
            continue  # limits differ per environment: an older run may wait longer than this one
        due.append(QueueExpiry(record.dagster_run.run_id, env_id, limit))
    return due


def end_queued_run(instance: dg.DagsterInstance, expiry: QueueExpiry) -> bool:
    """Cancel one run still QUEUED and tag it status 2; False when it was dequeued meanwhile."""
    run_id = expiry.run_id
    # Not the coordinator's cancel_run: for a run dequeued meanwhile it *terminates* the run,
    # which would stop a job that just started. Only a run still QUEUED is ended here.
    queued = instance.get_run_by_id(run_id)
    if queued is None or queued.status != dg.DagsterRunStatus.QUEUED:
        return False
    instance.report_run_canceling(queued, message=f"Queue wait limit of {expiry.limit} s reached.")
    run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.CANCELING:
        return False  # dequeued meanwhile: it runs, and its own stages record its status
    if engine.phase_tag(Stage.CONFIGURE, "started") in run.tags:
        return False
    # Status 2 first, then the run's end: a reader never sees the run ended without its status
    # (the Provider would report an ended run without one as stopped).
    instance.add_run_tags(
        run_id,
        {
            engine.STATUS: str(int(JobStatus.QUEUE_EXPIRED)),
            engine.STATUS_TEXT: JobStatus.QUEUE_EXPIRED.text,
            engine.STATUS_DETAIL: _expired_detail(expiry.limit, expiry.env_id),
            **engine.finish_tags(JobStatus.QUEUE_EXPIRED, time.time(), run.tags),
        },
    )
    instance.report_run_canceled(run)
    return True


def expire_queued_runs(
    instance: dg.DagsterInstance,
    limit_of: Callable[[str], int],
    now: float,
    run_ids: Sequence[str] | None = None,
    log: Any = None,
) -> list[str]:
    """Cancel the compute runs queued past their environment's limit (only those of `run_ids` when
    given) and tag them status 2; their run ids. What the queue expiry job's op runs."""
    due = due_queued_runs(instance, limit_of, now, run_ids)
    ended = act_on_each(
        due, lambda expiry: end_queued_run(instance, expiry), lambda expiry: f"run {expiry.run_id}", log
    )
    return [expiry.run_id for expiry in ended]


def queue_wait_limits(environments: Environments, default: int) -> Callable[[str], int]:
    """Each environment's queue wait limit; `default` (C2D_MAX_QUEUE_WAIT) for one it does not know."""

    def limit_of(env_id: str) -> int:
        try:
            return environments.get(env_id).queue_wait_limit(default)
        except UnknownEnvironmentError:
            return default

    return limit_of


def _queue_watchdog_tick(
    context: dg.SensorEvaluationContext, environments: ComputeEnvironments
) -> dg.RunRequest | dg.SkipReason:
    # Settings are read at the tick, never when the code location loads.
    limit_of = queue_wait_limits(environments.load(), engine_settings().max_queue_wait)
    due = due_queued_runs(context.instance, limit_of, time.time())
    wanted = maintenance.request(
        context.instance,
        what="queue_expiry",
        job_name=QUEUE_EXPIRY_JOB_NAME,
        op_name=QUEUE_EXPIRY_OP,
        targets=[expiry.run_id for expiry in due],
        reason=f"{len(due)} compute job(s) waited past their environment's queue wait limit",
    )
    if wanted is None:
        return maintenance.nothing_to_ask(f"{len(due)} job(s) waited past their queue wait limit", "end")
    return wanted


def queue_watchdog_sensor(minimum_interval_seconds: int) -> dg.SensorDefinition:
    """The queue watchdog, ticking at most every `minimum_interval_seconds` (definitions.py passes
    C2D_WATCHDOG_INTERVAL when it builds the code location)."""
    return dg.sensor(
        name="queue_watchdog",
        description="Ask queue_expiry_job to end compute jobs that waited longer than their environment's "
        "maxQueueWait (else C2D_MAX_QUEUE_WAIT) in the queue (status 2).",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        job_name=QUEUE_EXPIRY_JOB_NAME,
    )(_queue_watchdog_tick)


# At the default interval, for code that evaluates a tick itself; the code location builds its own.
queue_watchdog = queue_watchdog_sensor(DEFAULT_WATCHDOG_INTERVAL)
