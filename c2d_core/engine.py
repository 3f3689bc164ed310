"""The compute engine's contract: what the Provider, the CLI and the code location agree on about a run.

A compute job is one run of the Dagster job `compute_job` in the code location `c2d`. Its run config
carries the workflow; its tags carry the job's state. All job state lives in Dagster's run storage:
the tags below, written by the ops as the job moves, are enough for a reader of run storage alone (the
Provider) to build Ocean's job JSON. Tag values are strings, as Dagster's are. A few tags are visible
in the Dagster UI, readable; the rest are hidden from it (see "the tags of a compute run"). Nothing
here imports Dagster: the Provider and the CLI use it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from c2d_core.status import JobStatus, Stage

if TYPE_CHECKING:
    from c2d_core.workflow import Workflow

# --- where the job is --------------------------------------------------------------------------------

JOB_NAME = "compute_job"
LOCATION = "c2d"  # the code location's name in workspace.yaml (and the Helm chart's user deployment)
REPOSITORY = "__repository__"  # Dagster's name for the one repository a `Definitions` makes
# The op whose config carries the workflow, and its config field.
WORKFLOW_OP = "configure"
WORKFLOW_FIELD = "workflow"


def run_config(workflow: Workflow | Mapping[str, Any]) -> dict[str, Any]:
    """The run config of a compute job for `workflow` (a raw mapping is passed on as it is)."""
    document = (
        dict(workflow)
        if isinstance(workflow, Mapping)
        else workflow.model_dump(by_alias=True, mode="json", exclude_none=True)
    )
    return {"ops": {WORKFLOW_OP: {"config": {WORKFLOW_FIELD: document}}}}


def workflow_from_run_config(raw: Any) -> Workflow:
    """The workflow of a compute job's run config; ValueError when it holds none or a malformed one
    (pydantic's ValidationError is a ValueError)."""
    from c2d_core.workflow import Workflow

    try:
        document = raw["ops"][WORKFLOW_OP]["config"][WORKFLOW_FIELD]
    except (KeyError, TypeError):
        raise ValueError("the run config holds no workflow") from None
    return Workflow.model_validate(document)


# The embedded stack's warm run worker listens on a Unix socket whose path the CLI chooses (under the
# stack's home) and the worker binds: the kernel caps such a path (sun_path, 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


def check_socket_path(path: os.PathLike[str] | str) -> None:
    """ValueError when `path` is too long to be a Unix socket's address."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the warm run worker's socket path {os.fspath(path)} is longer than {MAX_SOCKET_PATH} bytes; "
            "set the launcher's socket_path (and the worker's --socket) to a shorter one"
        )


# --- the tags of a compute run -----------------------------------------------------------------------
#
# Two kinds. The few an operator filters the Dagster runs list on stay visible, with readable values:
# who, on what, where, Ocean's status and how the job ended (`VISIBLE`). The rest of the job's state
# lives under Dagster's hidden-tag prefix (dagster._core.storage.tags.HIDDEN_TAG_PREFIX): run storage
# keeps those tags and `RunsFilter(tags=...)` matches them like any other, but Dagster's GraphQL `tags`
# (what the UI renders) leaves them out, so the runs list shows a handful of tags, not two dozen.
# Hidden values keep their machine form (epoch seconds, as Ocean sends times; JSON lists).

PREFIX = "c2d/"
HIDDEN_PREFIX = ".dagster/"  # dagster._core.storage.tags.HIDDEN_TAG_PREFIX (Dagster is not imported here)
STATE_PREFIX = HIDDEN_PREFIX + PREFIX  # ".dagster/c2d/": the job's state, kept from the runs list

# Visible.
JOB_ID = "c2d/job_id"
OWNER = "c2d/owner"
ENVIRONMENT = "c2d/environment"
DID = "c2d/did"  # the first input DID; all of them are in INPUT_DIDS
STATUS = "c2d/status"
STATUS_TEXT = "c2d/status_text"
# How the job ended, in a few words from a small set (`outcome`), written with its finish date.
OUTCOME = "c2d/outcome"

# Hidden.
AGREEMENT_ID = STATE_PREFIX + "agreement_id"
INPUT_DIDS = STATE_PREFIX + "input_dids"  # JSON list
ALGO_DID = STATE_PREFIX + "algo_did"  # "raw" for a raw algorithm, as Ocean reports it
STATUS_DETAIL = STATE_PREFIX + "status_detail"  # a sentence on why, for failures; never a file location
DATE_FINISHED = STATE_PREFIX + "date_finished"  # epoch seconds

ALGORITHM_EXIT_CODE = STATE_PREFIX + "algorithm/exit_code"
# Completed, Error, DeadlineExceeded, OOMKilled, ...
ALGORITHM_TERMINATION = STATE_PREFIX + "algorithm/termination"
RESULTS = STATE_PREFIX + "results"  # JSON list of public manifest entries
STOP_REQUESTED = STATE_PREFIX + "stopreq"  # "1" when the consumer stopped the job (Ocean's stopreq)
MANIFEST = STATE_PREFIX + "manifest"  # the results manifest's store location; internal, never in job JSON
# The store location of the algorithm's log while the job runs (c2d_core.live_logs); internal, the
# Provider streams it to the job's owner (computeStreamableLogs) and never names it.
LIVE_LOG = STATE_PREFIX + "live_log"
RESULTS_EXPIRED = STATE_PREFIX + "results_expired"  # "1" once storage expiry deleted the results
# "1" when storing the results failed and the job's volume (outputs and logs) was kept for an
# operator's retry instead of being released; see docs/operations.md ("Results store down during publish").
VOLUME_KEPT = STATE_PREFIX + "volume_kept"
# Why the stage watchdog ended the job (a sentence), when it did: its run worker died, or a stage
# outlived its deadline. Such an end is not a consumer's stop (c2d_defs.stage_watchdog).
WATCHDOG = STATE_PREFIX + "watchdog"
RESULTS_DID = STATE_PREFIX + "results_did"  # the DID of the results asset (issue 8), once minted
# JSON list of the manifest indexes the results asset serves, written with RESULTS_DID: the Provider
# serves no other result of the job through the asset, whatever files its owner puts in the DDO later.
RESULTS_ASSET_FILES = STATE_PREFIX + "results_asset_files"
# The results asset's NFT address, recorded as soon as it is created (the Provider's key owns it until
# the hand-over): the stage watchdog finishes the hand-over of a mint whose run worker was killed.
RESULTS_NFT = STATE_PREFIX + "results_nft"
# JSON {"status": "published" | "failed" | "skipped", "detail": "..."}: how minting the results asset
# went, for jobs that asked for it; the detail is a sentence, never a URL, location or key.
RESULTS_ASSET = STATE_PREFIX + "results_asset"
# "1" from submission when the job asked to publish its results as an asset: until RESULTS_ASSET is
# written, the Provider reports the asset as pending (or failed, once the run ended without it).
OUTPUT_REQUESTED = STATE_PREFIX + "output_requested"

# The Provider's HMAC over the run's workflow (c2d_core.run_stamp).
STAMP = STATE_PREFIX + "stamp"
# A consumer's stop, recorded by the Provider just before it asks Dagster to terminate the run: who
# (the consumer's address) and when (epoch seconds). A run terminated without them was stopped by an
# operator (the Dagster UI, the GraphQL API) or by the engine itself. Hidden like the stamp: the job
# JSON says who stopped a job (`stoppedBy`, `stoppedAt`); the runs list need not.
STOPPED_BY = STATE_PREFIX + "stopped_by"
STOPPED_AT = STATE_PREFIX + "stopped_at"
# Why the engine refused to run this run (a re-execution, a launchpad run, a second run of a job id):
# such a run is not its job's and touched no data; readers of jobs skip it (`job_run`). Its outcome
# (visible) says "refused".
REFUSED = STATE_PREFIX + "refused"

# The c2d tags an operator sees on a compute run (the UI also shows Dagster's own, e.g. LAUNCHED_BY).
VISIBLE = frozenset({JOB_ID, OWNER, DID, ENVIRONMENT, STATUS, STATUS_TEXT, OUTCOME})

# The tag the Dagster UI shows as a run's "Launched by" (dagster._core.storage.tags.USER_TAG); without
# it every job reads "Manually launched".
LAUNCHED_BY = "user"

# Dagster's own tag: run monitoring fails a run that has been running longer than this (seconds).
MAX_RUNTIME = "dagster/max_runtime"


def phase_tag(stage: Stage | str, edge: str) -> str:
    """`.dagster/c2d/phase/<stage>/started` or `.../finished` (hidden; epoch seconds)."""
    if edge not in ("started", "finished"):
        raise ValueError(edge)
    return f"{STATE_PREFIX}phase/{Stage(stage).value}/{edge}"


# --- runs written before the state tags were hidden ---------------------------------------------------

# Each hidden tag under the visible name it had before (`c2d/<name>`), for runs already in storage:
# `current_tags` reads such a run as if written today, and c2d_defs.tag_upgrade copies the old values
# under the new names once, so tag filters (an agreement's runs) find old runs too.
LEGACY_NAMES: dict[str, str] = {
    PREFIX + name.removeprefix(STATE_PREFIX): name
    for name in (
        AGREEMENT_ID,
        INPUT_DIDS,
        ALGO_DID,
        STATUS_DETAIL,
        DATE_FINISHED,
        ALGORITHM_EXIT_CODE,
        ALGORITHM_TERMINATION,
        RESULTS,
        STOP_REQUESTED,
        MANIFEST,
        LIVE_LOG,
        RESULTS_EXPIRED,
        VOLUME_KEPT,
        WATCHDOG,
        RESULTS_DID,
        RESULTS_ASSET_FILES,
        RESULTS_NFT,
        RESULTS_ASSET,
        OUTPUT_REQUESTED,
        REFUSED,
        *(phase_tag(stage, edge) for stage in Stage for edge in ("started", "finished")),
    )
}


def legacy_upgrade(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags to add to a run written with the old visible names so that it holds every value under
    its current name too (empty when there is nothing to copy). A current value is never overwritten."""
    return {new: tags[old] for old, new in LEGACY_NAMES.items() if old in tags and new not in tags}


def current_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """A run's tags with any old-named value also under its current name: what every reader of job
    state reads, so jobs run before an upgrade read as they did."""
    tags = dict(tags or {})
    tags.update(legacy_upgrade(tags))
    return tags


# --- how a job ended, for operators ----------------------------------------------------------------

# An algorithm that ran and did not succeed still ends its job 70 (Ocean's rule); the outcome names why.
_ALGORITHM_OUTCOMES = {
    "Error": "algorithm failed",
    "OOMKilled": "algorithm out of memory",
    "DeadlineExceeded": "algorithm timed out",
    "DiskQuotaExceeded": "algorithm over its disk quota",
}
SUCCEEDED = "succeeded"
STOPPED = "stopped"
REFUSED_OUTCOME = "refused"


def outcome(status: JobStatus, termination: str | None = None, stopped: bool = False) -> str:
    """How a finished job ended, in words an operator filters the runs list on: "succeeded",
    "stopped", "algorithm failed" / "algorithm out of memory" / "algorithm timed out" / "algorithm
    over its disk quota" (status 70 all), or Ocean's failure text in lower case ("data provisioning
    failed", "job expired in queue", ...)."""
    if stopped or termination == "Stopped":
        return STOPPED
    if status.is_failure:
        return status.text.strip().lower()
    if termination in _ALGORITHM_OUTCOMES:
        return _ALGORITHM_OUTCOMES[termination]
    return SUCCEEDED if status is JobStatus.JOB_FINISHED else f"ended at {int(status)} {status.text.strip()}"


def job_outcome(status: JobStatus, tags: Mapping[str, str]) -> str:
    """The outcome of a job ending with `status`, judged from what its run's `tags` recorded."""
    job = JobTags.from_tags(tags)
    return outcome(status, job.algorithm_termination, job.stop_requested)


def finish_tags(status: JobStatus, finished_at: float, tags: Mapping[str, str]) -> dict[str, str]:
    """The tags that end a job, written in one call with its final status: the finish date (hidden,
    epoch seconds) and the outcome (visible)."""
    return {DATE_FINISHED: f"{finished_at:.3f}", OUTCOME: job_outcome(status, tags)}


def epoch(value: object) -> float | None:
    """A time as tags and the job JSON carry it (epoch seconds, a string or a number), or None."""
    try:
        return float(value) if value is not None and value != "" else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def past_max_runtime(tags: Mapping[str, str], started: float | None, now: float) -> bool:
    """Whether a run started at `started` has run out its `dagster/max_runtime` by `now`: then the
    terminate it got came from run monitoring, not from a consumer's stop. A second early counts (run
    monitoring's clock and ours differ a little)."""
    limit = epoch(tags.get(MAX_RUNTIME))
    return limit is not None and started is not None and now - started >= limit - 1


def job_run(tags: Mapping[str, str]) -> bool:
    """Whether a compute run is its job's own: not a re-execution of another run (Dagster copies
    the parent's tags into it) and not refused by the engine. A consumer never sees any other."""
    from c2d_core.run_stamp import PARENT_RUN_ID

    return PARENT_RUN_ID not in tags and REFUSED not in tags and PREFIX + "refused" not in tags


def submission_tags(
    workflow: Workflow, max_runtime_seconds: int | None = None, stamp_key: bytes | None = None
) -> dict[str, str]:
    """The tags a job's run starts with: who, where, on what, Ocean's status 1 and its deadline, and
    the Provider's stamp when it gives its key."""
    from c2d_core.run_stamp import stamp

    return {
        **(
            {STAMP: stamp(stamp_key, run_config(workflow)["ops"][WORKFLOW_OP]["config"][WORKFLOW_FIELD])}
            if stamp_key
            else {}
        ),
        **({MAX_RUNTIME: str(max_runtime_seconds)} if max_runtime_seconds else {}),
        JOB_ID: workflow.job_id,
        OWNER: workflow.owner,
        LAUNCHED_BY: f"the Provider, for {workflow.owner}",
        ENVIRONMENT: workflow.environment,
        **({AGREEMENT_ID: workflow.agreement_id} if workflow.agreement_id else {}),
        DID: workflow.inputs[0].did,
        INPUT_DIDS: json.dumps(workflow.dids),
        ALGO_DID: workflow.algorithm.did or "raw",
        STATUS: str(int(JobStatus.WARMING_UP)),
        STATUS_TEXT: JobStatus.WARMING_UP.text,
        **({OUTPUT_REQUESTED: "1"} if workflow.output is not None and workflow.output.publish_output else {}),
    }


@dataclass(frozen=True)
class JobTags:
    """A typed view of a compute run's tags: each reader parses them here, the same way."""

    tags: Mapping[str, str]

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None) -> JobTags:
        return cls(current_tags(tags))

    @property
    def job_id(self) -> str:
        return self.tags.get(JOB_ID, "")

    @property
    def environment(self) -> str:
        return self.tags.get(ENVIRONMENT, "")

    @property
    def status(self) -> JobStatus | None:
        """The job's Ocean status; None when the tag is missing or holds no known code."""
        try:
            return JobStatus(int(self.tags.get(STATUS, "")))
        except ValueError:
            return None

    @property
    def date_finished(self) -> float | None:
        return epoch(self.tags.get(DATE_FINISHED))

    @property
    def finished(self) -> bool:
        """The job's final status and finish date were written (whatever their value)."""
        return DATE_FINISHED in self.tags

    @property
    def stop_requested(self) -> bool:
        return self.tags.get(STOP_REQUESTED) == "1"

    @property
    def results_expired(self) -> bool:
        return self.tags.get(RESULTS_EXPIRED) == "1"

    @property
    def watchdog(self) -> str | None:
        """Why the stage watchdog ended the job, when it did."""
        return self.tags.get(WATCHDOG) or None

    @property
    def algorithm_termination(self) -> str | None:
        return self.tags.get(ALGORITHM_TERMINATION)

    @property
    def algorithm_exit_code(self) -> int | None:
        try:
            return int(self.tags[ALGORITHM_EXIT_CODE])
        except (KeyError, ValueError):
            return None

    @property
    def results(self) -> list[Any] | None:
        """The public manifest entries the job recorded; None before it recorded any (or unreadable)."""
        raw = self.tags.get(RESULTS)
        try:
            entries = json.loads(raw) if raw is not None else None
        except json.JSONDecodeError:
            return None
        return entries if isinstance(entries, list) else None

    def phase(self, stage: Stage | str, edge: str) -> float | None:
        """When `stage` started or finished (epoch seconds), if it did."""
        return epoch(self.tags.get(phase_tag(stage, edge)))

    @property
    def phases(self) -> dict[Stage, tuple[float | None, float | None]]:
        """(started, finished) of every stage, in order."""
        return {stage: (self.phase(stage, "started"), self.phase(stage, "finished")) for stage in Stage}
