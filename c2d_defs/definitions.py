"""The code location: every job, resource and sensor of the compute engine, from one place.

`C2D_DEPLOYMENT` picks the resources once (`local`: bubblewrap sandboxes and a local result store).
Ops never ask which one they got.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from c2d_defs.jobs import compute_job
from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource

resources_by_deployment: dict[str, dict[str, Any]] = {
    "local": {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": LocalResultStoreResource(),
        "environments": ComputeEnvironments(),
        # Stage outputs stay in memory: they carry the workflow, which must not land on disk.
        "io_manager": dg.mem_io_manager,
    },
}


def _deployment() -> str:
    deployment = os.environ.get("C2D_DEPLOYMENT", "local")
    if deployment not in resources_by_deployment:
        raise ValueError(
            f"C2D_DEPLOYMENT={deployment!r} is not available in this build "
            f"(choose from {sorted(resources_by_deployment)})"
        )
    return deployment


defs = dg.Definitions(jobs=[compute_job], resources=resources_by_deployment[_deployment()])
