"""The stages of a compute job: configure -> algorithm -> [output stages] -> publish (the ops that run
them and judge each step are in c2d_defs.ops.stages and, for output stages, c2d_defs.ops.output_stages).

Each stage records the job's Ocean status on the run as tags (see c2d_core.engine) and hands its work
to the `pod_runner` resource as a `PodSpec`. A failed stage never skips publish: logs always come back.
"""

import json
import time
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from pydantic import ValidationError

from c2d_core import engine
from c2d_core.environments import (
    Environment,
    OutputStageError,
    SettingsParser,
    UnknownEnvironmentError,
    check_output_stages,
)
from c2d_core.result_assets import (
    MAX_DETAIL,
    ResultsAssetOutcome,
    finish_handover,
    results_owner,
    wants_results_asset,
)
from c2d_core.results import ResultEntry
from c2d_core.settings import EngineSettings, engine_settings
from c2d_core.status import ALGORITHM_FAILURES, NEVER_STARTED, JobStatus, Stage
from c2d_core.workflow import JOB_ID_PATTERN, Workflow
from c2d_defs.ops.attestation import attest_job
from c2d_defs.ops.recorder import (
    JobRecorder,
    JobState,
    StageLog,
    fresh_tags,
    record_results_asset,
)
from c2d_defs.pod_output import LiveLogCopy, run_followed
from c2d_defs.pod_runner import PodResult, PodRunner
from c2d_defs.pods import layout
from c2d_defs.pods.common import explain_validation
from c2d_defs.pods.report import ConfigureReport, PublishReport
from c2d_defs.resources import ComputeEnvironments, ResultStorage
from c2d_defs.review_gate import park_for_review, publish_env, results_key, review_required
from c2d_defs.stage_pods import algorithm_spec, configure_spec, publish_spec

LOG_TAIL_LINES = 40

# The compute job's own ops; an output stage's op takes its stage's name, which must be none of these.
BUILTIN_OPS = frozenset({"configure", "run_algorithm", "publish"})
# On an output stage's op: the stage's name (how configure finds the stages its job runs).
OUTPUT_STAGE_TAG = "c2d/output_stage"
# On the run, hidden like the rest of the job's state (c2d_core.engine.STATE_PREFIX).
_OUTPUT_STAGE_STATE = engine.STATE_PREFIX + "output_stage"
# The settings parser of every output stage an op was made for, by name (c2d_defs.ops.output_stages).
_OUTPUT_STAGE_PARSERS: dict[str, SettingsParser] = {}
_OUTPUT_STAGE_KINDS: dict[str, type] = {}


def output_stage_tag(name: str, what: str) -> str:
    """`.dagster/c2d/output_stage/<name>/started|finished|verdict` on the run: one output stage's
    times and verdict (`accepted`, `rejected`, `interrupted`). Publish stores a job's outputs only
    when every output stage of its environment wrote `accepted`."""
    return f"{_OUTPUT_STAGE_STATE}/{name}/{what}"


def register_output_stage_parser(name: str, parse: SettingsParser, stage: object) -> None:
    """Remember `stage`'s settings parser for configure's check; two different kinds of stage under one
    name are refused (an environment could not say which one it means)."""
    known = _OUTPUT_STAGE_KINDS.setdefault(name, type(stage))
    if known is not type(stage):
        raise ValueError(
            f"two different output stages are named {name!r}: {known.__name__}, {type(stage).__name__}"
        )
    _OUTPUT_STAGE_PARSERS[name] = parse


def job_output_stages(job_def: dg.JobDefinition) -> list[str]:
    """The output stages `job_def` runs, in its order (from its ops' OUTPUT_STAGE_TAG)."""
    return [
        node.definition.tags[OUTPUT_STAGE_TAG]
        for node in job_def.graph.nodes_in_topological_order
        if OUTPUT_STAGE_TAG in node.definition.tags
    ]


def outputs_cleared(environment: Environment | None, tags: dict[str, str]) -> bool:
    """Whether publish may store the job's outputs: its environment has no output stages, or every one
    of them accepted them. A stage that rejected, failed, was interrupted or never ran (the algorithm
    was stopped, the run worker died) leaves them unchecked: only the logs are published."""
    if environment is None or not environment.output_stages:
        return True
    return all(
        tags.get(output_stage_tag(config.name, "verdict")) == "accepted"
        for config in environment.output_stages
    )


def live_log_allowed(environment: Environment) -> bool:
    """Whether the algorithm's log is copied, as it grows, where the Provider streams it to the job's
    owner. Not for a job held for review (its consumer sees nothing before the decision), nor where
    output stages judge what the algorithm wrote: its log is checked with its outputs and withheld
    with them, so a live copy would hand it out before the stages have looked at it."""
    return not environment.review.required and not environment.output_stages


class WorkflowConfig(dg.Config):
    """Run config of compute_job: the workflow the Provider built (see c2d_core.workflow)."""

    workflow: dict[str, Any]


def record_status(
    context: dg.OpExecutionContext,
    status: JobStatus,
    detail: str = "",
    extra: dict[str, str] | None = None,
    *,
    phase: tuple[Stage, str] | None = None,
) -> None:
    JobRecorder.of(context).status(status, detail, extra, phase=phase)


def record_phase(context: dg.OpExecutionContext, stage: Stage, edge: str) -> None:
    JobRecorder.of(context).phase(stage, edge)


def _job_id_of(context: dg.OpExecutionContext, raw: dict[str, Any]) -> str:
    """The job id for the volume and the results, even when the workflow itself is unusable."""
    for candidate in (raw.get("jobId"), context.run.tags.get(engine.JOB_ID)):
        if isinstance(candidate, str) and JOB_ID_PATTERN.match(candidate):
            return candidate
    return context.run_id.replace("-", "")


def log_pod(log: StageLog, component: str, result: PodResult) -> None:
    """How the pod ended and its log's last lines: one event (each is a write to the event log)."""
    ended = (
        f"{component} pod ended: {result.termination}"
        + (f" (exit code {result.exit_code})" if result.exit_code is not None else "")
        + f" after {result.duration:.2f} s"
        + (f": {result.message}" if result.message else "")
    )
    tail = "\n".join(result.log_tail.splitlines()[-LOG_TAIL_LINES:])
    log.info(f"{ended}\n{component} log (last lines):\n{tail}" if tail else ended)


def engine_end(context: dg.OpExecutionContext) -> str | None:
    """Why the engine terminated this run, when it was not a consumer's stop (then None).

    The stage watchdog tags its verdict just before it terminates a run (read fresh from run
    storage); run monitoring terminates a run past its `dagster/max_runtime` without a tag, so a run
    that has run that long was ended by its runtime limit. Anything else is a stop request (the
    Provider's stop, or an operator's terminate in the Dagster UI).
    """
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is None:
        return None
    tags = record.dagster_run.tags
    if tags.get(engine.WATCHDOG):
        return tags[engine.WATCHDOG]
    if engine.past_max_runtime(tags, record.start_time, time.time()):
        return (
            f"the job ran past its {engine.MAX_RUNTIME} of {tags[engine.MAX_RUNTIME]} s (all its "
            "stages' deadlines plus a grace) and the engine ended it"
        )
    return None


_engine_end = engine_end  # its earlier name, which tests still import


# What a configure pod may report; anything else means it ended without a report.
CONFIGURE_OUTCOMES = (
    JobStatus.PROVISIONING_SUCCESS,
    JobStatus.DATA_PROVISIONING_FAILED,
    JobStatus.ALGORITHM_PROVISIONING_FAILED,
)


def configure_stage(
    context: dg.OpExecutionContext,
    config: WorkflowConfig,
    pod_runner: dg.ResourceParam[PodRunner],
    environments: ComputeEnvironments,
    result_store: dg.ResourceParam[ResultStorage],
) -> JobState:
    settings = engine_settings()
    state = JobState(job_id=_job_id_of(context, config.workflow), status=JobStatus.CONFIGURING_VOLUMES)
    record_status(context, JobStatus.CONFIGURING_VOLUMES, phase=(Stage.CONFIGURE, "started"))
    try:
        try:
            workflow = Workflow.model_validate(config.workflow)
        except ValidationError as error:
            state.status = JobStatus.DATA_PROVISIONING_FAILED
            state.detail = explain_validation(error, "workflow")
            return state
        state.workflow = workflow
        plain = any(item.files.files for item in workflow.inputs) or bool(
            workflow.algorithm.files and workflow.algorithm.files.files
        )
        if plain and not settings.allow_plain_files:
            state.status = JobStatus.DATA_PROVISIONING_FAILED
            state.detail = (
                "plain file objects are disabled: send the DDO's encryptedFiles "
                "(or set C2D_ALLOW_PLAIN_FILES=true on a development stack)"
            )
            return state
        try:
            state.environment = environments.get(workflow.environment)
        except UnknownEnvironmentError as error:
            state.status, state.detail = JobStatus.DATA_PROVISIONING_FAILED, str(error)
            return state
        try:
            # Before anything is fetched: an environment whose output stages this job cannot run
            # (unknown name, wrong order, bad settings) must not get as far as running the algorithm.
            check_output_stages(state.environment, job_output_stages(context.job_def), _OUTPUT_STAGE_PARSERS)
        except OutputStageError as error:
            # No volume was made: publish has nothing to publish, as for an unknown environment.
            state.environment = None
            state.status, state.detail = JobStatus.DATA_PROVISIONING_FAILED, str(error)
            return state
        try:
            pod_runner.prepare_volume(workflow.job_id, state.environment.disk_bytes)
            pod_runner.write_file(
                workflow.job_id, layout.WORKFLOW_DOC, workflow.model_dump_json(by_alias=True).encode()
            )
        except OSError as error:
            state.status, state.detail = JobStatus.VOLUME_CREATION_FAILED, f"job volume: {error.strerror}"
            return state
        try:
            result = run_followed(pod_runner, configure_spec(workflow, state.environment, settings))
        except (DagsterExecutionInterruptedError, KeyboardInterrupt):
            # Stopped while fetching: the algorithm never runs, but the configure log still comes
            # back to the consumer and the volume (with whatever was fetched) is released.
            ended_by = engine_end(context)
            if ended_by is None:
                context.instance.add_run_tags(context.run_id, {engine.STOP_REQUESTED: "1"})
            state.status = JobStatus.DATA_PROVISIONING_FAILED
            state.detail = ended_by or "stopped on request while fetching the inputs"
            record_status(context, state.status, state.detail, phase=(Stage.CONFIGURE, "finished"))
            publish_results(context, state, pod_runner, result_store)
            raise
        log_pod(context.log, "configure", result)
        report = ConfigureReport.from_message(result.termination_message)
        state.provisioned = report
        reported = report.job_status if report is not None else None
        if report is not None and reported in CONFIGURE_OUTCOMES:
            state.status = reported
            state.detail = "" if reported is JobStatus.PROVISIONING_SUCCESS else report.message
        else:
            state.status = JobStatus.DATA_PROVISIONING_FAILED
            state.detail = (
                f"configure pod ended without a report: {result.termination} {result.message}".strip()
            )
        if state.status is JobStatus.PROVISIONING_SUCCESS and result.termination != "Completed":
            state.status = JobStatus.DATA_PROVISIONING_FAILED
            state.detail = f"configure pod: {result.termination} {result.message}".strip()
        return state
    finally:
        detail = state.detail if state.status.is_failure else ""
        record_status(context, state.status, detail, phase=(Stage.CONFIGURE, "finished"))


def algorithm_stage(
    context: dg.OpExecutionContext,
    state: JobState,
    pod_runner: dg.ResourceParam[PodRunner],
    result_store: dg.ResourceParam[ResultStorage],
) -> JobState:
    if state.status is not JobStatus.PROVISIONING_SUCCESS or not state.workflow or not state.environment:
        context.log.info(f"algorithm not run: the job is at status {int(state.status)} {state.status.text}")
        return state
    state.status = JobStatus.RUNNING_ALGORITHM
    record_status(context, state.status, phase=(Stage.ALGORITHM, "started"))
    env = state.environment
    try:
        # The algorithm's log also goes, as it grows, where the Provider streams it to the job's owner.
        recorder = JobRecorder.of(context)
        live = None
        if live_log_allowed(env):
            live = LiveLogCopy(
                result_store.store, state.job_id, lambda at: recorder.tags({engine.LIVE_LOG: at})
            )
        result = run_followed(pod_runner, algorithm_spec(state.workflow, env), live=live)
    except (DagsterExecutionInterruptedError, KeyboardInterrupt):
        # The run was terminated (a consumer's stop, the stage watchdog, or the run's max_runtime):
        # the runner has killed the pod. Like Ocean, publish what the algorithm wrote so far and its
        # log, then let the run end as canceled.
        context.log.warning("run terminated: the algorithm was killed; publishing its outputs and logs")
        ended_by = engine_end(context)
        if ended_by is None:
            ended = {engine.ALGORITHM_TERMINATION: "Stopped", engine.STOP_REQUESTED: "1"}
            state.detail = "algorithm stopped on request"
        else:
            ended = {engine.ALGORITHM_TERMINATION: "DeadlineExceeded"}
            state.status, state.detail = JobStatus.ALGORITHM_FAILED, ended_by
        recorder.phase(Stage.ALGORITHM, "finished", extra=ended)
        state.algorithm_ran = True
        publish_results(context, state, pod_runner, result_store)
        raise
    log_pod(context.log, "algorithm", result)
    tags: dict[str, str] = {engine.ALGORITHM_TERMINATION: result.termination}
    if result.exit_code is not None:
        tags[engine.ALGORITHM_EXIT_CODE] = str(result.exit_code)
    state.algorithm_ran = result.termination not in NEVER_STARTED
    # Like Ocean Node, an algorithm that ran but failed still publishes and finishes (70); the
    # termination tags and the detail say how it ended. Failing to start at all is status 41.
    # How it ended, its phase and any new status: one write.
    if result.termination in NEVER_STARTED:
        state.status, state.detail = JobStatus.ALGORITHM_FAILED, result.message
        recorder.status(state.status, state.detail, tags, phase=(Stage.ALGORITHM, "finished"))
    elif result.termination == "DiskQuotaExceeded":
        state.status, state.detail = JobStatus.DISK_QUOTA_EXCEEDED, result.message
        recorder.status(state.status, state.detail, tags, phase=(Stage.ALGORITHM, "finished"))
    else:
        recorder.phase(Stage.ALGORITHM, "finished", extra=tags)
    if result.termination == "Error":
        state.detail = f"algorithm exited with code {result.exit_code}"
    elif result.termination == "DeadlineExceeded":
        state.detail = f"algorithm stopped at the environment's maxJobDuration ({env.max_job_duration} s)"
    elif result.termination == "OOMKilled":
        state.detail = f"algorithm killed: out of memory (limit {env.ram_gb} GB)"
    elif result.termination == "Stopped":
        state.detail = "algorithm stopped on request"
    return state


def publish_results(
    context: dg.OpExecutionContext,
    state: JobState,
    pod_runner: PodRunner,
    result_store: ResultStorage,
) -> list[dict[str, Any]]:
    """Run the publish pod, record the manifest and the final status; release the job volume."""
    return publish_job(JobRecorder.of(context), state, pod_runner, result_store)


def publish_job(
    recorder: JobRecorder,
    state: JobState,
    pod_runner: PodRunner,
    result_store: ResultStorage,
) -> list[dict[str, Any]]:
    """The publish stage for the job on `recorder`'s run: the op's, or the stage watchdog's for a
    run whose worker died (it publishes what the volume holds, so the logs still come back)."""
    settings = engine_settings()
    on_success_path = not state.status.is_failure
    manifest: list[ResultEntry] = []
    published = False  # the publish pod stored everything (70): only then the volume may go
    # The result store failed (the pod reported a failed upload, ran out its deadline uploading, or
    # reading the manifest back raised): only then is the volume kept for an operator's re-publish.
    # A publish cut short by a stop or a termination releases it like any other end.
    store_failed = False
    cut_short = False  # an error or interrupt is on its way out of publish
    # The output stages' verdict on the outputs (no stages: cleared); the review gate holds only those.
    cleared = True
    public: list[dict[str, Any]] = []
    if on_success_path:
        recorder.status(JobStatus.PUBLISHING_RESULTS, phase=(Stage.PUBLISH, "started"))
    else:
        recorder.phase(Stage.PUBLISH, "started")
    try:
        if state.environment is None:
            recorder.log.info("nothing to publish: the job never got a volume")
        else:
            cleared = outputs_cleared(state.environment, fresh_tags(recorder))
            if not cleared and state.algorithm_ran:
                recorder.log.warning(
                    "the outputs are withheld (the environment's output stages did not accept them): "
                    "publishing the logs only"
                )
                unchecked = "its outputs were not checked by the output stages, so they are not published"
                if not state.detail:
                    state.detail = unchecked
                elif "not published" not in state.detail and "withheld" not in state.detail:
                    state.detail += f"; {unchecked}"
            spec = publish_spec(
                state.job_id,
                state.environment,
                settings,
                # A job held for review stores under its held key (c2d_defs.review_gate).
                result_store.publish_mounts(results_key(state, cleared)),
                {**result_store.publish_env(), **publish_env(state, cleared)},
                result_store.publish_secrets(),
                result_store.publish_network,
                outputs=cleared,
            )
            result = run_followed(pod_runner, spec)
            log_pod(recorder.log, "publish", result)
            report = PublishReport.from_message(result.termination_message)
            manifest_location = report.manifest if report is not None else ""
            if manifest_location:
                with result_store.store.open(manifest_location) as handle:
                    manifest = [ResultEntry.model_validate(item) for item in json.load(handle)]
                # Internal (operators and the Provider read it): where this job's manifest lives.
                recorder.tags({engine.MANIFEST: manifest_location})
            reported = report.job_status if report is not None else None
            published = reported is JobStatus.JOB_FINISHED and result.termination == "Completed"
            store_failed = not published and (
                (report is not None and report.status is not None) or result.termination == "DeadlineExceeded"
            )
            if not published:
                said = report.message if report is not None else ""
                message = said or f"{result.termination} {result.message}".strip()
                if on_success_path:
                    state.status, state.detail = JobStatus.RESULTS_UPLOAD_FAILED, message
                else:
                    recorder.log.warning(f"publishing logs failed too: {message}")
    except BaseException as error:
        if on_success_path:
            state.status = JobStatus.RESULTS_UPLOAD_FAILED
            state.detail = f"publishing did not complete ({type(error).__name__})"
        # An interrupt (DagsterExecutionInterruptedError, KeyboardInterrupt) is not an Exception.
        store_failed = isinstance(error, Exception)
        cut_short = True
        raise
    finally:
        # A held job's publish cut short is left to salvage (below), which publishes from the volume.
        held_cut_short = cut_short and review_required(state, cleared)
        if state.environment is not None and store_failed:
            # What did not reach the result store (outputs, logs) stays in the volume, so an operator
            # can publish it again; it is kept until removed by hand (docs/operations.md).
            recorder.tags({engine.VOLUME_KEPT: "1"})
            recorder.log.warning(f"publishing failed: the volume of job {state.job_id} is kept")
        elif state.environment is not None and not settings.keep_work_dirs and not held_cut_short:
            pod_runner.release_volume(state.job_id)
        if not state.status.is_failure:
            state.status = JobStatus.JOB_FINISHED
        if held_cut_short:
            # What it stored is under the held key, which only a decision may release: no RESULTS
            # (the Provider would serve those locations) and no finish date. The run ends unfinished,
            # and the stage watchdog's salvage_job publishes the volume again and holds the job.
            recorder.log.warning(
                f"publishing job {state.job_id}, held for review, was cut short: no results and no "
                "finish date recorded, the volume kept; the stage watchdog's salvage publishes it "
                "again and holds it for review"
            )
        elif review_required(state, cleared) and manifest:
            # The review gate: the job waits at 55 for an operator; review_job ends it (no finish
            # date, attestation or results asset before then).
            recorder.phase(Stage.PUBLISH, "finished")
            park_for_review(recorder, state, manifest)
            public = [entry.public() for entry in manifest]
        else:
            public = _finish_job(recorder, state, manifest, result_store, settings)
    return public


def _finish_job(
    recorder: JobRecorder,
    state: JobState,
    manifest: list[ResultEntry],
    result_store: ResultStorage,
    settings: EngineSettings,
) -> list[dict[str, Any]]:
    """Publish's last writes for a job that is not held: the attestation, RESULTS, the results asset,
    then the final status with its finish date."""
    finished_at = time.time()
    # Read once: nothing below changes the algorithm's tags the attestation and the last line read.
    tags = fresh_tags(recorder)
    published: dict[str, str] = {}
    if manifest:
        attested = attest_job(
            workflow=state.workflow,
            provisioned=state.provisioned,
            status=state.status,
            tags=tags,
            manifest=manifest,
            store=result_store.store,
            key_file=settings.resolved_provider_key_file,
            finished_at=finished_at,
            log=recorder.log,
        )
        if attested is not None:
            manifest.append(attested.entry)
            published[engine.MANIFEST] = attested.manifest_location
    public = [entry.public() for entry in manifest]
    published[engine.RESULTS] = json.dumps(public, separators=(",", ":"))
    said = ""
    ended = engine.JobTags.from_tags(tags).algorithm_termination
    if state.status is JobStatus.JOB_FINISHED and ended in ALGORITHM_FAILURES:
        said = f"job ended, the algorithm failed: {state.detail}; its outputs and logs are published"
    final = {engine.DATE_FINISHED: f"{finished_at:.3f}"}
    minting = wants_results_asset(state.workflow)
    if minting:
        # Publish's end and what it published: one write; the asset is minted from it, then the end.
        recorder.phase(Stage.PUBLISH, "finished", extra=published)
        record_results_asset(recorder, state, manifest, settings)
    else:
        # Nothing to mint in between: publish's end, what it published, the final status and
        # dateFinished are one write (two writes less per job, bench/job_overhead.py).
        final.update(published)
    # The final status and dateFinished land together (one write), so no reader ever sees a
    # finished date beside a status that is still moving. The attestation states the same date.
    recorder.status(
        state.status,
        state.detail,
        extra=final,
        said=said,
        phase=None if minting else (Stage.PUBLISH, "finished"),
    )
    return public


def finish_results_handover(recorder: JobRecorder, run: dg.DagsterRun) -> None:
    """For the stage watchdog: a results asset whose publish was cut short (its NFT created, no DID
    recorded: the worker was killed mid-way) is handed over to its owner, and recorded as failed."""
    nft = run.tags.get(engine.RESULTS_NFT)
    if not nft or run.tags.get(engine.RESULTS_DID):
        return
    try:
        owner = results_owner(engine.workflow_from_run_config(run.run_config))
    except ValueError:  # no workflow, or a malformed one (a pydantic ValidationError)
        sentence = f"the NFT {nft} was left with the Provider: the run's workflow names no owner"
    else:
        sentence = finish_handover(engine_settings(), nft, owner)
    detail = (
        f"publishing the results asset was cut short (its run worker died); hand-over by the watchdog: "
        f"{sentence}; the asset's metadata may be incomplete"
    )
    recorder.log.warning(f"results asset not published: {detail}")
    recorder.tags(ResultsAssetOutcome("failed", detail[:MAX_DETAIL]).tags())
