"""The compute job's three ops as an operator sees them in the Dagster UI: configure, run_algorithm, publish.

Each op runs its stage (c2d_defs.ops.compute), hands the job's state on, and only then fails its own
step when the job failed in that stage: a `dg.Failure` whose description is the job's sentence and whose
metadata is its status, exit code and termination. The job runs with `require_upstream_step_success`
off, so a step that handed its state on before failing does not skip the steps after it: publish still
runs (the logs come back) and succeeds, and the run is a failure exactly when the job failed.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from c2d_core import engine
from c2d_core.status import ALGORITHM_FAILURES, JobStatus, Stage
from c2d_defs.ops.compute import (
    JobState,
    WorkflowConfig,
    algorithm_stage,
    configure_stage,
    publish_results,
)
from c2d_defs.pod_runner import PodRunner
from c2d_defs.resources import ComputeEnvironments, ResultStorage


def _run_tags(context: dg.OpExecutionContext) -> engine.JobTags:
    """The run's tags as the stages left them (context.run holds those it started with)."""
    run = context.instance.get_run_by_id(context.run_id)
    return engine.JobTags.from_tags(run.tags if run is not None else {})


def _final_status(state: JobState) -> JobStatus:
    """The status the job ends with: its failure status, else Ocean's 70."""
    return state.status if state.status.is_failure else JobStatus.JOB_FINISHED


def stage_failure(
    stage: Stage, state: JobState, tags: engine.JobTags, failed_before: bool
) -> dg.Failure | None:
    """The failure of `stage`'s step, or None when the job did not fail in this stage.

    `failed_before` says the job had already failed in an earlier stage: that stage's step is the red
    one. An algorithm that ran and failed (non-zero exit, out of memory, deadline) still ends 70 for
    Ocean, as Ocean Node reports it, but it is a failed step and a failed run here.
    """
    if failed_before:
        return None
    termination = tags.algorithm_termination
    if stage is Stage.ALGORITHM and not state.status.is_failure and termination in ALGORITHM_FAILURES:
        sentence = f"The algorithm failed: {state.detail}" if state.detail else "The algorithm failed"
    elif state.status.is_failure:
        text = state.status.text.strip()
        sentence = f"{text}: {state.detail}" if state.detail else text
    else:
        return None
    status = _final_status(state)
    metadata: dict[str, Any] = {
        "ocean_status": int(status),
        "ocean_status_text": status.text.strip(),
        "stage": stage.value,
    }
    if stage is Stage.ALGORITHM:
        if tags.algorithm_exit_code is not None:
            metadata["exit_code"] = tags.algorithm_exit_code
        if termination:
            metadata["termination"] = termination
    # allow_retries=False: the job's outcome is decided; a retry would run the stage (and bill) again.
    return dg.Failure(description=sentence, metadata=metadata, allow_retries=False)


@dg.op(
    description="Fetch the inputs and the algorithm into the job volume (Ocean's pod-configuration).",
    tags={"c2d/stage": "configure"},
    out=dg.Out(JobState),
)
def configure(
    context: dg.OpExecutionContext,
    config: WorkflowConfig,
    pod_runner: dg.ResourceParam[PodRunner],
    environments: ComputeEnvironments,
    result_store: dg.ResourceParam[ResultStorage],
) -> Iterator[dg.Output[JobState]]:
    state = configure_stage(context, config, pod_runner, environments, result_store)
    yield dg.Output(state)
    failure = stage_failure(Stage.CONFIGURE, state, _run_tags(context), failed_before=False)
    if failure is not None:
        raise failure


@dg.op(
    description="Run the consumer's algorithm in its sandbox or pod, with the environment's limits.",
    tags={"c2d/stage": "run_algorithm"},
    out=dg.Out(JobState),
)
def run_algorithm(
    context: dg.OpExecutionContext,
    state: JobState,
    pod_runner: dg.ResourceParam[PodRunner],
    result_store: dg.ResourceParam[ResultStorage],
) -> Iterator[dg.Output[JobState]]:
    failed_before = state.status.is_failure
    state = algorithm_stage(context, state, pod_runner, result_store)
    yield dg.Output(state)
    failure = stage_failure(Stage.ALGORITHM, state, _run_tags(context), failed_before)
    if failure is not None:
        raise failure


@dg.op(
    description="Upload outputs and logs to the result store and write the results manifest.",
    tags={"c2d/stage": "publish"},
    out=dg.Out(list),
)
def publish(
    context: dg.OpExecutionContext,
    state: JobState,
    pod_runner: dg.ResourceParam[PodRunner],
    result_store: dg.ResourceParam[ResultStorage],
) -> Iterator[dg.Output[list[dict[str, Any]]]]:
    failed_before = state.status.is_failure
    public = publish_results(context, state, pod_runner, result_store)
    yield dg.Output(public, metadata={"results": len(public)})
    failure = stage_failure(Stage.PUBLISH, state, _run_tags(context), failed_before)
    if failure is not None:
        raise failure
