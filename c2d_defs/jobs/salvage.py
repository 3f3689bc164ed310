"""`salvage_job`: finishes a compute job whose run died or was ended by the stage watchdog.

The `stage_watchdog` sensor (c2d_defs.stage_watchdog) decides which jobs need it and asks for one run
per compute run; this job does the work where it has logs, a retry and a place in the Dagster UI.

Salvage is publish by another run, so it keeps publish's rules: a job of an environment that requires
review, whose algorithm ran, is published under its held key and parked at 55 for an operator, never
released under its own key. It refuses (touching nothing: no pod killed, no tag written) a run that
has not ended, whose worker may still be publishing, and a job awaiting review, which only review_job
or the review deadline may end; both can be asked for by hand from the launchpad.
"""

# No `from __future__ import annotations`: Dagster reads the salvage op's config annotation as a type.
import time

import dagster as dg

from c2d_core import engine
from c2d_core.environments import Environment, UnknownEnvironmentError
from c2d_core.review import ReviewView
from c2d_core.status import NEVER_STARTED, Stage
from c2d_defs.ops.compute import finish_results_handover, outputs_cleared, publish_job
from c2d_defs.ops.recorder import JobRecorder, JobState
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


def salvage_refusal(run: dg.DagsterRun, tags: dict[str, str]) -> str | None:
    """Why the job of `run` may not be salvaged now (a sentence for the operator), or None."""
    job_id = tags.get(engine.JOB_ID, "?")
    if not run.is_finished:
        return (
            f"the run {run.run_id} of job {job_id} has not ended (it is {run.status.value}): its worker "
            "may still be publishing; terminate it first, the stage watchdog salvages it once it has ended"
        )
    if ReviewView(tags).awaiting:
        return (
            f"job {job_id} is awaiting an operator's review: its results are held, and only review_job "
            "(or its review deadline) ends it"
        )
    return None


def algorithm_ran(tags: dict[str, str]) -> bool:
    """From the phase tags: the algorithm stage started and its pod did not fail to start. What the
    review gate asks (c2d_defs.review_gate.review_required); when in doubt, the algorithm ran."""
    job = engine.JobTags.from_tags(tags)
    started, _ = job.phases[Stage.ALGORITHM]
    return started is not None and job.algorithm_termination not in NEVER_STARTED


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
    refusal = salvage_refusal(run, tags)
    if refusal is not None:
        raise dg.Failure(description=f"salvage refused: {refusal}", allow_retries=False)
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
    try:
        environment: Environment | None = environments.get(tags.get(engine.ENVIRONMENT, ""))
    except UnknownEnvironmentError:
        environment = None
    ran = algorithm_ran(tags)
    # As publish decides (c2d_defs.review_gate.review_required): withheld outputs are not held.
    held = (
        environment is not None and environment.review.required and ran and outputs_cleared(environment, tags)
    )
    if results_stored(tags) and not held:
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
    has_volume = environment is not None and stage is not None and pod_runner.has_volume(job_id)
    if held and has_volume:
        context.log.info(
            f"job {job_id}'s environment requires review: its results are published under its held key "
            "and the job is held for an operator's decision"
        )
    elif held:
        # Nothing to hold: what an earlier publish stored stays under the held key, which is never
        # served and goes with the job's results at their storageExpiry.
        context.log.warning(f"job {job_id}'s volume is gone: nothing to publish or hold for review")
    state = JobState(
        job_id=job_id,
        status=status,
        detail=f"{detail}; the logs and outputs written so far are published" if has_volume else detail,
        # Without a volume there is nothing to publish: publish_job then only records the end.
        environment=environment if has_volume else None,
        # What decides, with the environment, whether publish holds the results for review.
        algorithm_ran=ran,
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
