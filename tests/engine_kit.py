"""Running the real `compute_job` in process, with the embedded deployment's resources (the bubblewrap
sandbox, the local result store, the environments file), for tests that read its run back."""

from __future__ import annotations

from typing import Any

import dagster as dg

from c2d_defs.jobs import compute_job
from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource


def run_compute_job(
    workflow: dict[str, Any], instance: dg.DagsterInstance, **options: Any
) -> dg.ExecuteInProcessResult:
    """Run `workflow` as compute_job on `instance`; failures are results, not exceptions."""
    return compute_job.execute_in_process(
        run_config={"ops": {"configure": {"config": {"workflow": workflow}}}},
        instance=instance,
        resources={
            "pod_runner": LocalPodRunnerResource(),
            "result_store": LocalResultStoreResource(),
            "environments": ComputeEnvironments(),
            # Stage outputs carry the workflow: they stay in memory, as in the code location.
            "io_manager": dg.mem_io_manager,
        },
        raise_on_error=False,
        **options,
    )
