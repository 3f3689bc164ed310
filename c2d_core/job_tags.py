"""Names of the Dagster run tags that carry a compute job's state.

All job state lives in Dagster's run storage: these tags, written by the ops as the job moves, are
enough for a reader of run storage alone (the Provider, over GraphQL) to build Ocean's job JSON.
Values are strings, as Dagster tags are; times are epoch seconds, as Ocean sends them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from c2d_core.environments import Environment
    from c2d_core.settings import EngineSettings
    from c2d_core.workflow import Workflow

PREFIX = "c2d/"

JOB_ID = "c2d/job_id"
OWNER = "c2d/owner"
ENVIRONMENT = "c2d/environment"
AGREEMENT_ID = "c2d/agreement_id"
DID = "c2d/did"  # the first input DID; all of them are in INPUT_DIDS
INPUT_DIDS = "c2d/input_dids"  # JSON list
ALGO_DID = "c2d/algo_did"  # "raw" for a raw algorithm, as Ocean reports it

STATUS = "c2d/status"
STATUS_TEXT = "c2d/status_text"
STATUS_DETAIL = "c2d/status_detail"  # a sentence on why, for failures; never a file location
DATE_FINISHED = "c2d/date_finished"

ALGORITHM_EXIT_CODE = "c2d/algorithm/exit_code"
ALGORITHM_TERMINATION = "c2d/algorithm/termination"  # Completed, Error, DeadlineExceeded, OOMKilled, ...
RESULTS = "c2d/results"  # JSON list of public manifest entries
STOP_REQUESTED = "c2d/stopreq"  # "1" when the consumer stopped the job (Ocean's stopreq)
MANIFEST = "c2d/manifest"  # the results manifest's store location; internal, never in job JSON
RESULTS_EXPIRED = "c2d/results_expired"  # "1" once storage expiry deleted the results
# "1" when publishing failed and the job's volume (outputs and logs) was kept for an operator's retry
# instead of being released; see docs/operations.md ("Results store down during publish").
VOLUME_KEPT = "c2d/volume_kept"
# Why the stage watchdog ended the job (a sentence), when it did: its run worker died, or a stage
# outlived its deadline. Such an end is not a consumer's stop (c2d_defs.stage_watchdog).
WATCHDOG = "c2d/watchdog"
RESULTS_DID = "c2d/results_did"  # the DID of the results asset (issue 8), once published
# JSON list of the manifest indexes the results asset serves, written with RESULTS_DID: the Provider
# serves no other result of the job through the asset, whatever files its owner puts in the DDO later.
RESULTS_ASSET_FILES = "c2d/results_asset_files"
# The results asset's NFT address, recorded as soon as it is created (the Provider's key owns it until
# the hand-over): the stage watchdog finishes the hand-over of a publish whose run worker was killed.
RESULTS_NFT = "c2d/results_nft"
# JSON {"status": "published" | "failed" | "skipped", "detail": "..."}: how publishing the results as an
# asset went, for jobs that asked for it; the detail is a sentence, never a URL, location or key.
RESULTS_ASSET = "c2d/results_asset"
# "1" from submission when the job asked to publish its results as an asset: until RESULTS_ASSET is
# written, the Provider reports the asset as pending (or failed, once the run ended without it).
OUTPUT_REQUESTED = "c2d/output_requested"


def phase_tag(phase: str, edge: str) -> str:
    """`c2d/phase/<phase>/started` or `.../finished`."""
    if edge not in ("started", "finished"):
        raise ValueError(edge)
    return f"c2d/phase/{phase}/{edge}"


# Dagster's own tag: run monitoring fails a run that has been running longer than this (seconds).
MAX_RUNTIME = "dagster/max_runtime"


def max_runtime(environment: Environment, settings: EngineSettings) -> int:
    """The whole job's deadline: every stage's own deadline end to end, plus the watchdog's grace.

    The pods' deadlines fire first; this one catches a run whose worker hung between or around them.
    """
    stages = settings.configure_deadline + environment.max_job_duration + settings.publish_deadline
    return stages + settings.watchdog_grace


def past_max_runtime(tags: Mapping[str, str], started: float | None, now: float) -> bool:
    """Whether a run started at `started` has run out its `dagster/max_runtime` by `now`: then the
    terminate it got came from run monitoring, not from a consumer's stop. A second early counts (run
    monitoring's clock and ours differ a little)."""
    try:
        limit = float(tags[MAX_RUNTIME])
    except (KeyError, ValueError):
        return False
    return started is not None and now - started >= limit - 1


def submission_tags(workflow: Workflow, max_runtime_seconds: int | None = None) -> dict[str, str]:
    """The tags a job's run starts with: who, where, on what, Ocean's status 1 and its deadline."""
    from c2d_core.status import JobStatus

    return {
        **({MAX_RUNTIME: str(max_runtime_seconds)} if max_runtime_seconds else {}),
        JOB_ID: workflow.job_id,
        OWNER: workflow.owner,
        ENVIRONMENT: workflow.environment,
        **({AGREEMENT_ID: workflow.agreement_id} if workflow.agreement_id else {}),
        DID: workflow.inputs[0].did,
        INPUT_DIDS: json.dumps(workflow.dids),
        ALGO_DID: workflow.algorithm.did or "raw",
        STATUS: str(int(JobStatus.WARMING_UP)),
        STATUS_TEXT: JobStatus.WARMING_UP.text,
        **({OUTPUT_REQUESTED: "1"} if workflow.output is not None and workflow.output.publish_output else {}),
    }
