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

from c2d_core import engine, run_stamp
from c2d_core.settings import engine_settings
from c2d_core.status import ALGORITHM_FAILURES, JobStatus, Stage
from c2d_defs.ops.compute import (
    WorkflowConfig,
    algorithm_stage,
    configure_stage,
    publish_results,
)
from c2d_defs.ops.recorder import JobState
from c2d_defs.pod_runner import PodRunner
from c2d_defs.resources import ComputeEnvironments, ResultStorage


def _run_tags(context: dg.OpExecutionContext) -> engine.JobTags:
    """The run's tags as the stages left them (context.run holds those it started with)."""
    run = context.instance.get_run_by_id(context.run_id)
    return engine.JobTags.from_tags(run.tags if run is not None else {})


def _final_status(state: JobState) -> JobStatus:
    """The status the job ends with: its failure status, else Ocean's 70."""
    return state.status if state.status.is_failure else JobStatus.JOB_FINISHED


def job_line(document: dict[str, Any]) -> str:
    """The run's first line: who, on which data, with which algorithm, where (ids only, never a URL)."""
    inputs = [str(item.get("did", "?")) for item in document.get("inputs") or [] if isinstance(item, dict)]
    raw_algorithm = document.get("algorithm")
    algorithm: dict[str, Any] = raw_algorithm if isinstance(raw_algorithm, dict) else {}
    raw_container = algorithm.get("container")
    container: dict[str, Any] = raw_container if isinstance(raw_container, dict) else {}
    image = f"{container.get('image', '?')}:{container.get('tag', 'latest')}"
    which = algorithm.get("did") or "raw code"
    return (
        f"job {document.get('jobId', '?')} for consumer {document.get('owner', '?')}: dataset(s) "
        f"{', '.join(inputs) or 'none'}; algorithm {which} in {image}; environment "
        f"{document.get('environment', '?')}"
    )


def _duration(tags: engine.JobTags, stage: Stage) -> dict[str, Any]:
    started, finished = tags.phase(stage, "started"), tags.phase(stage, "finished")
    if started is None or finished is None:
        return {}
    return {"duration_s": dg.MetadataValue.float(round(finished - started, 3))}


def _status_summary(state: JobState) -> str:
    status = _final_status(state) if state.status.is_terminal else state.status
    return f"{int(status)} {status.text.strip()}" + (f": {state.detail}" if state.detail else "")


def configure_metadata(state: JobState, tags: engine.JobTags) -> dict[str, Any]:
    """Durations, the inputs' and the algorithm's files (sizes and sha256, never locations), the image."""
    metadata: dict[str, Any] = {**_duration(tags, Stage.CONFIGURE), "ocean_status": _status_summary(state)}
    report = state.provisioned
    if report is not None:
        schema = dg.TableSchema(
            columns=[
                dg.TableColumn("asset", "string"),
                dg.TableColumn("did", "string"),
                dg.TableColumn("index", "int"),
                dg.TableColumn("size", "int"),
                dg.TableColumn("sha256", "string"),
            ]
        )
        rows = [
            dg.TableRecord(
                {"asset": name, "did": asset.did or "", "index": f.index, "size": f.size, "sha256": f.sha256}
            )
            for name, asset in [*(("input", item) for item in report.inputs), ("algorithm", report.algorithm)]
            for f in asset.files
        ]
        metadata["files"] = dg.MetadataValue.table(rows, schema=schema)
    if state.workflow is not None:
        container = state.workflow.algorithm.container
        metadata["algorithm_image"] = f"{container.image}:{container.tag or 'latest'}"
        if container.checksum:
            metadata["algorithm_image_checksum"] = container.checksum
    return metadata


def algorithm_metadata(state: JobState, tags: engine.JobTags) -> dict[str, Any]:
    metadata: dict[str, Any] = {**_duration(tags, Stage.ALGORITHM), "ocean_status": _status_summary(state)}
    if tags.algorithm_exit_code is not None:
        metadata["exit_code"] = tags.algorithm_exit_code
    if tags.algorithm_termination:
        metadata["termination"] = tags.algorithm_termination
    return metadata


def publish_metadata(
    state: JobState, tags: engine.JobTags, public: list[dict[str, Any]], store_kind: str
) -> dict[str, Any]:
    """The output manifest as a table, the store's kind (never its URL) and the job's final status."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("index", "int"),
            dg.TableColumn("filename", "string"),
            dg.TableColumn("type", "string"),
            dg.TableColumn("filesize", "int"),
            dg.TableColumn("sha256", "string"),
        ]
    )
    rows = [
        dg.TableRecord({key: entry.get(key) for key in ("index", "filename", "type", "filesize", "sha256")})
        for entry in public
    ]
    return {
        **_duration(tags, Stage.PUBLISH),
        "results": len(public),
        "manifest": dg.MetadataValue.table(rows, schema=schema),
        "result_store": store_kind,
        "ocean_status": _status_summary(state),
    }


def refusal(context: dg.OpExecutionContext, document: dict[str, Any]) -> str | None:
    """Why this run must not run (a sentence), or None when it is the run the Provider submitted
    for its job: not a re-execution, the job id its workflow names, stamped by the Provider (when
    stamped, or when the engine requires it), and the first run of its job id and agreement."""
    tags = context.run.tags
    parent = tags.get(run_stamp.PARENT_RUN_ID)
    if parent:
        return (
            f"it re-executes run {parent}, and a compute job runs once per order: the consumer starts "
            "a new job, with a new order, through the Provider"
        )
    job_id = tags.get(engine.JOB_ID, "")
    if not job_id or job_id != document.get("jobId"):
        return f"its {engine.JOB_ID} tag does not name its workflow's job: the Provider did not submit it"
    settings = engine_settings()
    given = tags.get(engine.STAMP)
    if given or settings.require_run_stamp:
        key = run_stamp.stamp_key_from_file(settings.resolved_provider_key_file)
        if key is None:
            return "the engine holds no Provider key to check the run's stamp (C2D_PROVIDER_KEY_FILE)"
        problem = run_stamp.stamp_problem(key, given, document)
        if problem:
            return problem
    mine = context.instance.get_run_record_by_id(context.run_id)
    created = mine.create_timestamp if mine is not None else None
    holders = {engine.JOB_ID: job_id}
    if document.get("agreementId"):
        holders[engine.AGREEMENT_ID] = str(document["agreementId"])
    for key_name, value in holders.items():
        for record in context.instance.get_run_records(
            dg.RunsFilter(job_name=engine.JOB_NAME, tags={key_name: value}), limit=50
        ):
            other = record.dagster_run
            if other.run_id == context.run_id or not engine.job_run(other.tags):
                continue
            if created is not None and record.create_timestamp > created:
                continue  # a later run is the one refused (by its own first op)
            if key_name == engine.AGREEMENT_ID and engine.DATE_FINISHED in other.tags:
                continue  # an order may serve another job once its job has finished
            return (
                f"{'job' if key_name == engine.JOB_ID else 'the agreement of job'} {job_id} already has "
                f"its run {other.run_id}: a compute job runs once per order"
            )
    return None


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
    refused = refusal(context, config.workflow)
    if refused is not None:
        # Nothing is fetched, run or published, and no job status is written: this run is not its job's.
        context.instance.add_run_tags(
            context.run_id, {engine.REFUSED: refused[:1000], engine.OUTCOME: engine.REFUSED_OUTCOME}
        )
        context.log.error(f"run refused: {refused}")
        raise dg.Failure(
            description=f"Run refused: {refused}", metadata={"refused": refused}, allow_retries=False
        )
    context.log.info(job_line(config.workflow))
    state = configure_stage(context, config, pod_runner, environments, result_store)
    tags = _run_tags(context)
    yield dg.Output(state, metadata=configure_metadata(state, tags))
    failure = stage_failure(Stage.CONFIGURE, state, tags, failed_before=False)
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
    tags = _run_tags(context)
    yield dg.Output(state, metadata=algorithm_metadata(state, tags))
    failure = stage_failure(Stage.ALGORITHM, state, tags, failed_before)
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
    tags = _run_tags(context)
    kind = type(result_store.store).__name__
    yield dg.Output(public, metadata=publish_metadata(state, tags, public, kind))
    failure = stage_failure(Stage.PUBLISH, state, tags, failed_before)
    if failure is not None:
        raise failure
