"""`queue_expiry_job` and `results_expiry_job`: the work the queue watchdog and the storage expiry
sensor ask for (c2d_defs.queue_watchdog, c2d_defs.expiry; the contract in c2d_defs.maintenance).

Each op judges its targets again with the state of the moment (a run dequeued since the tick is left
alone, results expired meanwhile are not deleted twice), acts on each, logs each, and is retried by
its `RetryPolicy` when a target failed on a transient error; the retry acts on what is still due.
"""

# No `from __future__ import annotations`: Dagster reads the ops' config annotations as types.
import time

import dagster as dg

from c2d_core.settings import engine_settings
from c2d_defs.expiry import RESULTS_EXPIRY_JOB_NAME, RESULTS_EXPIRY_OP, expire_results, expiry_lookup
from c2d_defs.maintenance import RETRY_POLICY, MaintenanceConfig
from c2d_defs.queue_watchdog import (
    QUEUE_EXPIRY_JOB_NAME,
    QUEUE_EXPIRY_OP,
    expire_queued_runs,
    queue_wait_limits,
)
from c2d_defs.resources import ComputeEnvironments, ResultStorage

MAINTENANCE_KIND = {"c2d/kind": "maintenance"}


@dg.op(
    name=QUEUE_EXPIRY_OP,
    description="Cancel the compute runs still queued past their environment's queue wait limit "
    "and record status 2 (Job expired in queue).",
    retry_policy=RETRY_POLICY,
)
def expire_queued(
    context: dg.OpExecutionContext, config: MaintenanceConfig, environments: ComputeEnvironments
) -> None:
    limit_of = queue_wait_limits(environments.load(), engine_settings().max_queue_wait)
    ended = expire_queued_runs(context.instance, limit_of, time.time(), config.targets, context.log)
    for run_id in ended:
        context.log.info(f"ended the queued compute run {run_id}: it waited past its queue wait limit")
    context.log.info(f"ended {len(ended)} of {len(config.targets)} job(s); the others had left the queue")


@dg.op(
    name=RESULTS_EXPIRY_OP,
    description="Delete the results of finished jobs past their environment's storageExpiry and "
    "tag their runs .dagster/c2d/results_expired (a hidden tag).",
    retry_policy=RETRY_POLICY,
)
def expire_job_results(
    context: dg.OpExecutionContext,
    config: MaintenanceConfig,
    result_store: dg.ResourceParam[ResultStorage],
    environments: ComputeEnvironments,
) -> None:
    store = result_store.store
    expired = expire_results(
        context.instance, store, expiry_lookup(environments), time.time(), config.targets, context.log
    )
    for job_id in expired:
        context.log.info(f"deleted the results of job {job_id}")
    context.log.info(f"expired the results of {len(expired)} job(s)")


@dg.job(
    name=QUEUE_EXPIRY_JOB_NAME,
    description="Ends compute jobs that waited too long in the run queue, for the queue watchdog.",
    executor_def=dg.in_process_executor,
    tags=MAINTENANCE_KIND,
)
def queue_expiry_job() -> None:
    expire_queued()


@dg.job(
    name=RESULTS_EXPIRY_JOB_NAME,
    description="Deletes job results past their storageExpiry, for the storage expiry sensor.",
    executor_def=dg.in_process_executor,
    tags=MAINTENANCE_KIND,
)
def results_expiry_job() -> None:
    expire_job_results()
