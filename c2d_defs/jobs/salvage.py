"""`salvage_job`: finishes a compute job whose run died or was ended by the stage watchdog.

The `stage_watchdog` sensor (c2d_defs.stage_watchdog) decides which jobs need it and asks for one run
per compute run; this job does the work where it has logs, a retry and a place in the Dagster UI.
"""

# No `from __future__ import annotations`: Dagster reads the salvage op's config annotation as a type.
import time

import dagster as dg

from c2d_core import engine
from c2d_core.environments import Environment, UnknownEnvironmentError
from c2d_defs.ops.compute import JobRecorder, JobState, finish_results_handover, publish_job
from c2d_defs.pod_runner import PodRunner
from c2d_defs.resources import ComputeEnvironments, ResultStorage
from c2d_defs.stage_watchdog import (
    SALVAGE_JOB_NAME,
    WATCHDOG,
    current_stage,
    failure_status,
    results_stored,
    where,
)


class SalvageConfig(dg.Config):
    run_id: str


@dg.op(
    description="Finish a compute job whose run died: kill its pods, publish its logs and outputs "
    "from the job volume, release the volume, record the final status.",
    tags={"c2d/stage": "salvage"},
)
def salvage(
    context: dg.OpExecutionContext,
    config: SalvageConfig,
    pod_runner: dg.ResourceParam[PodRunner],
    result_store: dg.ResourceParam[ResultStorage],
    environments: ComputeEnvironments,
) -> None:
    run = context.instance.get_run_by_id(config.run_id)
    if run is None or run.job_name != engine.JOB_NAME:
        raise dg.Failure(f"run {config.run_id} is not a compute job's run")
    tags = engine.current_tags(run.tags)
    if engine.DATE_FINISHED in tags:
        context.log.info(f"job of run {config.run_id} is finished already: nothing to do")
        return
    job_id = tags[engine.JOB_ID]
    stage = current_stage(tags)
    status = failure_status(stage)
    detail = tags.get(WATCHDOG) or f"the job's run ended {where(stage)}"
    recorder = JobRecorder(context.instance, config.run_id, context.log)
    killed = pod_runner.kill_pods(job_id)
    if killed:
        context.log.info(f"killed what was left of {killed} pod(s) of job {job_id}")
    # A results asset cut short mid-publish is still the Provider's NFT: hand it to its owner.
    finish_results_handover(recorder, run)
    if results_stored(tags):
        # The worker died after the results were stored (in the results-asset step, or just before
        # the last write): publishing again would find no volume and record an empty result list.
        # The verdict carries the status publish was about to write.
        final = engine.JobTags.from_tags(tags).status or status
        recorder.status(
            final,
            f"{detail}; its results had been stored",
            extra={engine.DATE_FINISHED: f"{time.time():.3f}"},
        )
        return
    try:
        environment: Environment | None = environments.get(tags.get(engine.ENVIRONMENT, ""))
    except UnknownEnvironmentError:
        environment = None
    has_volume = environment is not None and stage is not None and pod_runner.has_volume(job_id)
    state = JobState(
        job_id=job_id,
        status=status,
        detail=f"{detail}; the logs and outputs written so far are published" if has_volume else detail,
        # Without a volume there is nothing to publish: publish_job then only records the end.
        environment=environment if has_volume else None,
    )
    publish_job(recorder, state, pod_runner, result_store)


@dg.job(
    name=SALVAGE_JOB_NAME,
    description="Publishes the logs of a compute job whose run died, for the stage watchdog.",
    executor_def=dg.in_process_executor,
    tags={"c2d/kind": "salvage"},
)
def salvage_job() -> None:
    salvage()
