"""The code location: every job, resource and sensor of the compute engine, from one place.

`C2D_DEPLOYMENT` picks the resources once (`local`: bubblewrap sandboxes; `k8s`: Kubernetes Jobs through
dagster-k8s, a PVC per job, and a sensor that cleans up after them), and `C2D_RESULT_STORE` the result
store (`local`, `s3`, `ipfs`). Ops never ask which one they got. Every deployment runs the storage
expiry sensor (c2d_defs.expiry), the queue watchdog (c2d_defs.queue_watchdog) and the stage watchdog
(c2d_defs.stage_watchdog); each tick only reads and asks for a run of its job (c2d_defs.jobs:
results_expiry_job, queue_expiry_job, salvage_job; on Kubernetes also volume_cleanup_job).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dagster as dg

from c2d_core.settings import engine_settings
from c2d_defs.expiry import results_expiry, review_expiry
from c2d_defs.jobs import compute_job, queue_expiry_job, results_expiry_job, salvage_job
from c2d_defs.jobs.review import review_expiry_job, review_job
from c2d_defs.queue_watchdog import queue_watchdog_sensor
from c2d_defs.resources import (
    ComputeEnvironments,
    LocalPodRunnerResource,
    ResultStoreResource,
    result_store_resource,
)
from c2d_defs.stage_watchdog import stage_watchdog_sensor


def _result_store() -> ResultStoreResource:
    # A built-in store, or one an extension (C2D_EXTENSIONS) registered under that name.
    return result_store_resource(os.environ.get("C2D_RESULT_STORE", "local").strip() or "local")


def _watchdogs() -> list[dg.SensorDefinition]:
    """Both watchdogs at C2D_WATCHDOG_INTERVAL (a sensor's interval is part of its definition)."""
    interval = engine_settings().watchdog_interval
    return [queue_watchdog_sensor(interval), stage_watchdog_sensor(interval)]


Deployment = tuple[dict[str, Any], list[dg.SensorDefinition], list[dg.JobDefinition]]
# Every deployment's jobs: the compute job, the runs its sensors ask for, and the review gate's
# (review_job: an operator's decision, c2d_defs.jobs.review).
JOBS = [compute_job, salvage_job, queue_expiry_job, results_expiry_job, review_job, review_expiry_job]


def _local() -> Deployment:
    resources = {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": _result_store(),
        "environments": ComputeEnvironments(),
        # Stage outputs stay in memory: they carry the workflow, which must not land on disk.
        "io_manager": dg.mem_io_manager,
    }
    return resources, [results_expiry, review_expiry, *_watchdogs()], JOBS


def _k8s() -> Deployment:
    # Imported only here: dagster-k8s costs about 2 s per process, which the embedded default never pays.
    from c2d_defs.jobs.volume_cleanup import volume_cleanup_job
    from c2d_defs.k8s_resources import K8sPodRunnerResource, k8s_volume_cleanup

    resources = {
        "pod_runner": K8sPodRunnerResource(),
        # S3 or IPFS in production; `local` is a volume shared by the run pods and the publish pod
        # (jobs.sharedClaims).
        "result_store": _result_store(),
        "environments": ComputeEnvironments(),
        # One run is one run pod (in-process executor): stage outputs never leave its memory.
        "io_manager": dg.mem_io_manager,
    }
    sensors = [k8s_volume_cleanup, results_expiry, review_expiry, *_watchdogs()]
    return resources, sensors, [*JOBS, volume_cleanup_job]


# Each deployment's resources (and sensors), built only for the deployment in use.
resources_by_deployment: dict[str, Callable[[], Deployment]] = {
    "local": _local,
    "k8s": _k8s,
}


def _deployment() -> str:
    deployment = os.environ.get("C2D_DEPLOYMENT", "local")
    if deployment not in resources_by_deployment:
        raise ValueError(
            f"C2D_DEPLOYMENT={deployment!r} is not available in this build "
            f"(choose from {sorted(resources_by_deployment)})"
        )
    return deployment


_resources, _sensors, _jobs = resources_by_deployment[_deployment()]()
defs = dg.Definitions(jobs=_jobs, resources=_resources, sensors=_sensors)
