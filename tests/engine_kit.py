"""Running the real `compute_job` in process, with the embedded deployment's resources (the bubblewrap
sandbox, the local result store, the environments file), for tests that read its run back; and running
the job a sensor's `RunRequest` asks for, as the daemon would launch it."""

from __future__ import annotations

from typing import Any

import dagster as dg

from c2d_core import engine, run_stamp
from c2d_core.settings import engine_settings
from c2d_defs.jobs import compute_job
from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource


def compute_job_with_local_resources() -> dg.JobDefinition:
    """compute_job with the embedded deployment's resources, for `dg.reconstructable`."""
    resources = {
        "pod_runner": LocalPodRunnerResource(),
        "result_store": LocalResultStoreResource(),
        "environments": ComputeEnvironments(),
        # Stage outputs carry the workflow: they stay in memory, as in the code location.
        "io_manager": dg.mem_io_manager,
    }
    return dg.Definitions(jobs=[compute_job], resources=resources).get_job_def(compute_job.name)


def run_compute_job(
    workflow: dict[str, Any], instance: dg.DagsterInstance, **options: Any
) -> dg.ExecutionResult:
    """Run `workflow` as compute_job on `instance`; failures are results, not exceptions.

    Through `dg.execute_job`, not `execute_in_process`: the latter swaps the job's executor for its
    own, and compute_job's executor is part of how it behaves (a failed stage does not skip publish).
    """
    job = dg.reconstructable(compute_job_with_local_resources)
    # Dagster keeps the last definition it loaded; the resources read this test's settings, so load anew.
    type(job).get_definition.cache_clear()
    type(job).get_repository_definition.cache_clear()
    return dg.execute_job(
        job,
        instance=instance,
        run_config=engine.run_config(workflow),
        tags={**provider_tags(workflow), **options.pop("tags", {})},
        raise_on_error=False,
        **options,
    )


def provider_tags(workflow: dict[str, Any]) -> dict[str, str]:
    """What the Provider tags every run with that the engine checks: the job id and its stamp
    (under this test's Provider key, when it has one)."""
    key = run_stamp.stamp_key_from_file(engine_settings().resolved_provider_key_file)
    stamp = {engine.STAMP: run_stamp.stamp(key, workflow)} if key is not None else {}
    return {engine.JOB_ID: str(workflow.get("jobId", "")), **stamp}


def run_requested_job(
    request: dg.RunRequest,
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
) -> dg.ExecuteInProcessResult:
    """Run what a sensor tick asked for (`request`, of `job`), with its config and tags, on `instance`."""
    return job.execute_in_process(
        run_config=dict(request.run_config),
        instance=instance,
        resources=resources,
        tags=dict(request.tags),
        raise_on_error=False,
    )
