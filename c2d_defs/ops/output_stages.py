"""The op of each output stage (c2d_defs.output_stages): Ocean's status 50 between the algorithm and publish.

`output_stage_op(stage)` makes the Dagster op named after the stage. It runs the stage only when the
job's environment lists it (else it hands the job's state on untouched, saying why in its output's
metadata), records the filter phase and the stage's status and times, and on a rejection (or a stage
that could not check the outputs) ends the job with the stage's failure status and sentence. Publish
then stores the logs and withholds the outputs (c2d_defs.ops.compute.outputs_cleared), and this op's
step fails like the other stages'.
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

from c2d_core import engine
from c2d_core.environments import Environment
from c2d_core.settings import engine_settings
from c2d_core.status import Stage
from c2d_defs.ops.compute import (
    BUILTIN_OPS,
    OUTPUT_STAGE_TAG,
    engine_end,
    output_stage_tag,
    publish_results,
    register_output_stage_parser,
)
from c2d_defs.ops.recorder import JobRecorder, JobState, phase_tags
from c2d_defs.ops.stages import stage_failure
from c2d_defs.output_stages import OutputStage, StageContext, StageVerdict
from c2d_defs.pod_runner import PodRunner
from c2d_defs.resources import ResultStorage


def _configured(env: Environment | None) -> list[str]:
    return [config.name for config in env.output_stages] if env is not None else []


def not_run_reason(stage: OutputStage[Any], state: JobState) -> str | None:
    """Why `stage` does not run for this job (a sentence), or None when it runs."""
    env = state.environment
    if env is None or env.output_stage(stage.name) is None or state.workflow is None:
        return "the job's environment does not list it"
    if state.status.is_failure:
        return f"the job is at status {int(state.status)} {state.status.text}"
    return None


def run_output_stage(
    context: dg.OpExecutionContext,
    stage: OutputStage[Any],
    state: JobState,
    pod_runner: PodRunner,
    result_store: ResultStorage,
) -> tuple[JobState, StageVerdict | None]:
    """Run `stage` for the job when its environment lists it; the verdict, or None when it did not run."""
    env, name = state.environment, stage.name
    why = not_run_reason(stage, state)
    if why is not None:
        context.log.info(f"output stage {name} not run: {why}")
        return state, None
    assert env is not None and state.workflow is not None  # not_run_reason: both are there
    config = env.output_stage(name)
    assert config is not None
    recorder = JobRecorder.of(context)
    names = _configured(env)
    started = time.time()
    # The stage's start, the filter phase's (at the first stage) and the status: one write.
    begun = {output_stage_tag(name, "started"): f"{started:.3f}"}
    if names[0] == name:
        begun.update(phase_tags(Stage.FILTER, "started"))
    recorder.status(stage.status, extra=begun)
    ctx = StageContext(
        job_id=state.job_id,
        workflow=state.workflow,
        environment=env,
        settings=engine_settings(),
        recorder=recorder,
        pod_runner=pod_runner,
        result_store=result_store,
        config=config,
        stage_name=name,
    )
    try:
        try:
            settings = stage.parse_settings(config.settings)
        except ValueError as error:
            verdict = StageVerdict.reject(
                f"the stage's settings are unusable ({error}), so the outputs were not checked"
            )
        else:
            verdict = stage.run(ctx, settings)
    except (DagsterExecutionInterruptedError, KeyboardInterrupt):
        # Stopped while the outputs were being checked: they are unchecked, so only the logs go out.
        ended_by = engine_end(context)
        if ended_by is None:
            recorder.tags({engine.STOP_REQUESTED: "1"})
        state.status = stage.failure_status
        state.detail = (
            f"{ended_by or 'stopped on request'} while the {name} stage checked the outputs; unchecked "
            "outputs are not published, only the logs"
        )
        _finish(recorder, name, "interrupted")
        recorder.status(state.status, state.detail)
        publish_results(context, state, pod_runner, result_store)
        raise
    except Exception as error:
        # A broken stage must not let outputs through: it counts as a rejection (fail closed).
        context.log.error(f"output stage {name} failed: {type(error).__name__}: {error}")
        verdict = StageVerdict.reject(
            f"the stage failed ({type(error).__name__}), so the outputs were not checked and are not "
            "published"
        )
    context.log.info(
        f"output stage {name}: {'accepted' if verdict.accepted else 'rejected'}"
        + (f": {verdict.reason}" if verdict.reason else "")
    )
    last = names[-1] == name
    if not verdict.accepted:
        state.status = stage.failure_status
        state.detail = f"outputs withheld by the {name} stage: {verdict.reason}"
    _finish(
        recorder,
        name,
        "accepted" if verdict.accepted else "rejected",
        filter_done=last or not verdict.accepted,
    )
    if not verdict.accepted:
        recorder.status(state.status, state.detail)
    return state, verdict


def _finish(recorder: JobRecorder, name: str, verdict: str, filter_done: bool = True) -> None:
    tags = {
        output_stage_tag(name, "finished"): f"{time.time():.3f}",
        output_stage_tag(name, "verdict"): verdict,
    }
    if filter_done:
        tags.update(phase_tags(Stage.FILTER, "finished"))
    recorder.tags(tags)  # the stage's end and the filter phase's: one write


def _metadata(
    stage: OutputStage[Any], state: JobState, verdict: StageVerdict | None, tags: engine.JobTags
) -> dict[str, Any]:
    if verdict is None:
        return {"ran": False}
    metadata: dict[str, Any] = {"ran": True, "verdict": "accepted" if verdict.accepted else "rejected"}
    started = engine.epoch(tags.tags.get(output_stage_tag(stage.name, "started")))
    finished = engine.epoch(tags.tags.get(output_stage_tag(stage.name, "finished")))
    if started is not None and finished is not None:
        metadata["duration_s"] = dg.MetadataValue.float(round(finished - started, 3))
    if verdict.reason:
        metadata["reason"] = verdict.reason
    for key, value in verdict.metadata.items():
        metadata.setdefault(str(key), value if isinstance(value, int | float | str | bool) else str(value))
    status = state.status
    metadata["ocean_status"] = f"{int(status)} {status.text.strip()}" + (
        f": {state.detail}" if status.is_failure and state.detail else ""
    )
    return metadata


def output_stage_op(stage: OutputStage[Any]) -> dg.OpDefinition:
    """The Dagster op of `stage`: named after it, tagged `c2d/stage: filter` and `c2d/output_stage`."""
    name = stage.name
    if name in BUILTIN_OPS:
        raise ValueError(f"an output stage may not be named {name!r}: the compute job has an op of that name")
    register_output_stage_parser(name, stage.parse_settings, stage)

    @dg.op(
        name=name,
        description=stage.description,
        tags={"c2d/stage": Stage.FILTER.value, OUTPUT_STAGE_TAG: name},
        out=dg.Out(JobState),
    )
    def _output_stage(
        context: dg.OpExecutionContext,
        state: JobState,
        pod_runner: dg.ResourceParam[PodRunner],
        result_store: dg.ResourceParam[ResultStorage],
    ) -> Iterator[dg.Output[JobState]]:
        why = not_run_reason(stage, state)
        if why is not None:
            # The no-op path (most jobs: their environment lists no output stage): the state handed on
            # untouched and the reason in the step's output metadata, which the UI shows; no log line,
            # tag write or run read beyond Dagster's own step events (bench/job_overhead.py).
            yield dg.Output(state, metadata={"ran": False, "reason": why})
            return
        failed_before = state.status.is_failure
        state, verdict = run_output_stage(context, stage, state, pod_runner, result_store)
        run = context.instance.get_run_by_id(context.run_id)
        tags = engine.JobTags.from_tags(run.tags if run is not None else {})
        yield dg.Output(state, metadata=_metadata(stage, state, verdict, tags))
        failure = stage_failure(Stage.FILTER, state, tags, failed_before) if verdict is not None else None
        if failure is not None:
            raise dg.Failure(
                description=failure.description,
                metadata={**failure.metadata, "output_stage": name},
                allow_retries=False,
            )

    return _output_stage
