"""Names of the Dagster run tags that carry a compute job's state.

All job state lives in Dagster's run storage: these tags, written by the ops as the job moves, are
enough for a reader of run storage alone (the Provider, over GraphQL) to build Ocean's job JSON.
Values are strings, as Dagster tags are; times are epoch seconds, as Ocean sends them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


def phase_tag(phase: str, edge: str) -> str:
    """`c2d/phase/<phase>/started` or `.../finished`."""
    if edge not in ("started", "finished"):
        raise ValueError(edge)
    return f"c2d/phase/{phase}/{edge}"


def submission_tags(workflow: Workflow) -> dict[str, str]:
    """The tags a job's run starts with: who, where, on what, and Ocean's status 1."""
    from c2d_core.status import JobStatus

    return {
        JOB_ID: workflow.job_id,
        OWNER: workflow.owner,
        ENVIRONMENT: workflow.environment,
        **({AGREEMENT_ID: workflow.agreement_id} if workflow.agreement_id else {}),
        DID: workflow.inputs[0].did,
        INPUT_DIDS: json.dumps(workflow.dids),
        ALGO_DID: workflow.algorithm.did or "raw",
        STATUS: str(int(JobStatus.WARMING_UP)),
        STATUS_TEXT: JobStatus.WARMING_UP.text,
    }
