"""Where a compute job's stages record what happened: the state one stage hands the next
(`JobState`), the recorder that writes the job's Ocean status, phases and metadata on its run
(`JobRecorder`), and the results asset a finished job may publish.

Its own module so that what publish hands on to (the review gate) and what reads a job afterwards
(the watchdogs, salvage) share the recorder without importing the ops that use it.
"""

import time
from dataclasses import dataclass, field
from typing import Protocol

import dagster as dg
from dagster._utils.interrupts import capture_interrupts, check_captured_interrupt

from c2d_core import engine
from c2d_core.environments import Environment
from c2d_core.result_assets import mint_for_job, skip_reason
from c2d_core.results import ResultEntry
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus, Stage
from c2d_core.workflow import Workflow
from c2d_defs.pods.report import ConfigureReport


@dataclass
class JobState:
    """What one stage tells the next; kept in memory (mem_io_manager), never written to disk."""

    job_id: str
    status: JobStatus
    detail: str = ""
    workflow: Workflow | None = None
    environment: Environment | None = None
    algorithm_ran: bool = False
    notes: list[str] = field(default_factory=list)
    # What the configure pod fetched (files, sizes, sha256), for the job's attestation.
    provisioned: ConfigureReport | None = None


class StageLog(Protocol):
    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


@dataclass(frozen=True)
class JobRecorder:
    """Where a stage records a job's state: the job's run (tags) and a log.

    An op records on its own run; the stage watchdog (c2d_defs.stage_watchdog) publishes for a run
    whose worker died, from another process, through the same functions.
    """

    instance: dg.DagsterInstance
    run_id: str
    log: StageLog

    @classmethod
    def of(cls, context: dg.OpExecutionContext) -> "JobRecorder":
        return cls(context.instance, context.run_id, context.log)

    def tags(self, tags: dict[str, str]) -> None:
        self.instance.add_run_tags(self.run_id, tags)

    def status(
        self,
        status: JobStatus,
        detail: str = "",
        extra: dict[str, str] | None = None,
        said: str = "",
        *,
        phase: tuple[Stage, str] | None = None,
    ) -> None:
        """Record `status`; the log line is `said` when given (a failed algorithm's job ends 70 for
        Ocean, and its log must not read as a success). `phase` (stage, edge) is recorded in the same
        write: one run-storage write per stage edge, not one per tag."""
        tags = {engine.STATUS: str(int(status)), engine.STATUS_TEXT: status.text, **(extra or {})}
        if phase is not None:
            tags.update(phase_tags(*phase))
        if detail:
            tags[engine.STATUS_DETAIL] = detail[:1000]
        if engine.DATE_FINISHED in tags:
            # The job's end: its outcome (visible in the runs list) lands in the same write.
            run = self.instance.get_run_by_id(self.run_id)
            recorded = {**(run.tags if run is not None else {}), **tags}
            tags[engine.OUTCOME] = engine.job_outcome(status, recorded)
        self.tags(tags)
        self.log.info(
            said or f"status {int(status)} {status.text.strip()}" + (f": {detail}" if detail else "")
        )

    def phase(self, stage: Stage, edge: str, extra: dict[str, str] | None = None) -> None:
        self.tags({**phase_tags(stage, edge), **(extra or {})})


def phase_tags(stage: Stage, edge: str) -> dict[str, str]:
    """The tag that says when `stage` started or finished (now)."""
    return {engine.phase_tag(stage, edge): f"{time.time():.3f}"}


def fresh_tags(recorder: JobRecorder) -> dict[str, str]:
    """The run's tags as they are now (the ops added some since the run started)."""
    run = recorder.instance.get_run_by_id(recorder.run_id)
    return dict(run.tags) if run is not None else {}


def record_results_asset(
    recorder: JobRecorder, state: JobState, manifest: list[ResultEntry], settings: EngineSettings
) -> None:
    """Publish the results as a new Ocean asset (the workflow's `output`), recorded on the run's tags.

    This runs here, in the run worker, and not in the publish pod on purpose: the pod handles files
    the algorithm wrote, and the chain transactions need the Provider's key, which must never be
    within reach of those files. Publishing needs only the manifest (names, sizes, checksums).
    Any failure is recorded and logged; the job still ends 70 and computeResult keeps working.
    """
    if state.workflow is None:
        return
    run = recorder.instance.get_run_by_id(recorder.run_id)
    tags = run.tags if run is not None else {}  # read fresh: the ops added tags since the run started
    if tags.get(engine.RESULTS_DID):
        recorder.log.info(f"results asset already published as {tags[engine.RESULTS_DID]}")
        return
    reason = skip_reason(
        manifest,
        stopped=tags.get(engine.STOP_REQUESTED) == "1",
        algorithm_termination=tags.get(engine.ALGORITHM_TERMINATION),
        failure=f"{int(state.status)} {state.status.text.strip()}" if state.status.is_failure else "",
    )
    # A stop arriving mid-way would leave a half-made asset and skip the final status write; the job's
    # pods are all done by now, so the few transactions finish first and the stop is only noted.
    with capture_interrupts():
        outcome = mint_for_job(
            settings,
            state.workflow,
            manifest,
            skip_reason=reason,
            # Before anything else can fail: a worker killed before the hand-over leaves the NFT with
            # the Provider, and this tag is how the stage watchdog finds it (finish_results_handover).
            on_created=lambda nft: recorder.tags({engine.RESULTS_NFT: nft}),
        )
        if check_captured_interrupt():
            recorder.log.warning("a stop came while the results asset was published; it was finished first")
    recorder.tags(outcome.tags())
    if outcome.status == "failed":
        recorder.log.warning(f"results asset not published: {outcome.detail}")
    else:
        recorder.log.info(f"results asset {outcome.status}: {outcome.detail}")
    if outcome.asset is not None:
        recorder.log.info(
            f"results asset: {outcome.asset.transactions} transactions in {outcome.asset.seconds:.2f} s"
        )
