"""`volume_cleanup_job`: deletes the job volumes the `k8s_volume_cleanup` sensor found left behind.

Kubernetes only: imported by the `k8s` entry of `resources_by_deployment`, so the embedded default
never pays for dagster-k8s. Each volume is judged again when the op runs (a run of the job that
started since the tick, or a salvage still due, keeps it).
"""

# No `from __future__ import annotations`: Dagster reads the op's config annotation as a type.
import time

import dagster as dg

from c2d_core.settings import engine_settings
from c2d_defs.jobs.maintenance import MAINTENANCE_KIND
from c2d_defs.k8s_resources import (
    VOLUME_CLEANUP_JOB_NAME,
    VOLUME_CLEANUP_OP,
    release_orphaned_volumes,
)
from c2d_defs.maintenance import RETRY_POLICY, MaintenanceConfig
from c2d_defs.pod_runner import PodRunner


@dg.op(
    name=VOLUME_CLEANUP_OP,
    description="Delete the PVC, files ConfigMap and Jobs of each job whose runs all ended.",
    retry_policy=RETRY_POLICY,
)
def release_volumes(
    context: dg.OpExecutionContext, config: MaintenanceConfig, pod_runner: dg.ResourceParam[PodRunner]
) -> None:
    if engine_settings().keep_work_dirs:
        context.log.info("C2D_KEEP_WORK_DIRS is set: job volumes are kept for inspection")
        return
    grace = engine_settings().k8s.cleanup_grace_seconds
    released = release_orphaned_volumes(
        context.instance, pod_runner, time.time(), grace, config.targets, context.log
    )
    for job_id in released:
        context.log.info(f"released the volume of job {job_id}")
    context.log.info(f"released {len(released)} left-over job volume(s)")


@dg.job(
    name=VOLUME_CLEANUP_JOB_NAME,
    description="Deletes job volumes their runs left behind, for the k8s volume cleanup sensor.",
    executor_def=dg.in_process_executor,
    tags=MAINTENANCE_KIND,
)
def volume_cleanup_job() -> None:
    release_volumes()
