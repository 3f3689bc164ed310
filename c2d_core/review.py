"""The review gate's contract: an environment's review policy, the tags a held job carries, where its
held results live, and when a decision may be taken.

An environment with `review: {required: true}` holds every job whose algorithm ran after its output
stages: the publish pod stores the outputs and logs under the job's *held* key of the result store
(`<job id>.held`, which the Provider never serves), the job's status becomes 55 "Awaiting review" with
no `dateFinished` (Ocean's clients keep polling a running job), and its run ends. An operator then
launches `review_job` (the Dagster UI's launchpad, or `c2d admin review approve|reject`): approval
moves the held results to the job's own key and ends the job as it would have ended without the
gate (70, or the failure it had); rejection keeps only the logs (or nothing) and ends it 56 with the
reviewer's reason; a job nobody decided on within the environment's `deadlineSeconds` ends 57. The
decision, who took it and when stay on the job's run as the tags below. Nothing here imports Dagster:
the Provider, the CLI and the code location all read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from c2d_core import engine

# Where held results live is defined beside the result store interface, which the publish pod imports
# without this module's pydantic models; re-exported here, where the review gate's callers look.
from c2d_core.result_store_base import HELD_SUFFIX as HELD_SUFFIX
from c2d_core.result_store_base import held_key as held_key
from c2d_core.result_store_base import store_key_problem as store_key_problem
from c2d_core.status import JobStatus

# --- the environment's policy --------------------------------------------------------------------------


class ReviewPolicy(BaseModel):
    """`review:` of an environment in config/environments.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    required: bool = False
    # How long a held job waits for a decision before it ends 57 and its held outputs are deleted;
    # 0 keeps it waiting until an operator decides.
    deadline_seconds: int = Field(default=86400, alias="deadlineSeconds", ge=0, description="seconds")


# --- tags on the compute run ----------------------------------------------------------------------------
# Visible (Dagster's GraphQL API, so the runs list and `c2d admin review`, shows them; an operator
# filters on `c2d/review/state=awaiting`): the state, its times, who decided and why, and the outcome
# approval would give. The rest under Dagster's hidden-tag prefix, like the job's other internal state.
# `c2d admin review` reads runs through the webserver's GraphQL API only (an operator may have nothing
# else), so what it shows must be among the visible tags.

_HIDDEN = ".dagster/c2d/review/"  # dagster._core.storage.tags.HIDDEN_TAG_PREFIX + c2d/review/

STATE = "c2d/review/state"  # awaiting | approved | rejected | expired
REQUESTED_AT = "c2d/review/requested_at"  # epoch seconds: when the job was parked
DEADLINE = "c2d/review/deadline"  # epoch seconds: when an undecided job expires (absent: never)
DECIDED_BY = "c2d/review/decided_by"  # the operator identity the review run named
DECIDED_AT = "c2d/review/decided_at"  # epoch seconds
REASON = "c2d/review/reason"  # the reviewer's sentence (required on reject)
DECISION_RUN = _HIDDEN + "decision_run"  # the review_job run (or expiry run) that decided
# JSON {"status": int, "detail": str}: how the job would have ended without the gate; approval ends it so.
# Visible: `c2d admin review show` tells the operator what approving does (a failure status is not 70).
OUTCOME = "c2d/review/outcome"
# Where jobs parked before the outcome became visible keep it: read when OUTCOME is absent.
LEGACY_OUTCOME = _HIDDEN + "outcome"
# JSON list of the held results' public entries (index, filename, filesize, type, sha256): what the
# review run's metadata shows; never a location. Hidden (a list would crowd the runs list): `c2d admin
# review show` reads the held manifest from the result store instead.
HELD = _HIDDEN + "held"
# The configure pod's report (ids, sizes, sha256: never a location), kept so approval can still sign
# the job's attestation, which needs it, from another run.
PROVISIONED = _HIDDEN + "provisioned"

# On review_job runs: the job the run decides on (the CLI sets it at launch; the op sets it otherwise).
REVIEW_JOB_ID = "c2d/review/job_id"
# On a review_job run that refused to decide: why (a sentence), as .dagster/c2d/refused is on a compute run.
REVIEW_REFUSED = "c2d/review/refused"

ReviewState = Literal["awaiting", "approved", "rejected", "expired"]
Decision = Literal["approve", "reject"]
DECISIONS: tuple[Decision, ...] = ("approve", "reject")

REVIEW_JOB_NAME = "review_job"
REVIEW_OP = "review"

# --- where held results live -------------------------------------------------------------------------

# HELD_SUFFIX, held_key and store_key_problem: c2d_core.result_store_base (imported above).


# --- reading a job's review -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewView:
    """A compute run's review tags, parsed once."""

    tags: Mapping[str, str]

    @property
    def state(self) -> str:
        return self.tags.get(STATE, "")

    @property
    def awaiting(self) -> bool:
        """Parked and undecided: the job is at 55 and its results are held."""
        # A job's end writes its finish date (hidden) and its outcome (visible) in one write; a reader
        # of GraphQL's tags sees only the outcome, so either one means the job has ended. (A run the
        # engine refused carries an outcome too, "refused": it awaits nothing either.)
        ended = engine.DATE_FINISHED in self.tags or engine.OUTCOME in self.tags
        return self.state == "awaiting" and not ended

    @property
    def deadline(self) -> float | None:
        return engine.epoch(self.tags.get(DEADLINE))

    def expired(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline

    @property
    def outcome(self) -> tuple[JobStatus, str]:
        """The status (and detail) the job would have ended with; 70 when unreadable."""
        try:
            raw: Any = json.loads(self.tags.get(OUTCOME) or self.tags.get(LEGACY_OUTCOME) or "{}")
            return JobStatus(int(raw["status"])), str(raw.get("detail") or "")
        except (ValueError, KeyError, TypeError):
            return JobStatus.JOB_FINISHED, ""

    @property
    def held(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.tags.get(HELD, "[]"))
        except json.JSONDecodeError:
            return []
        return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []

    def summary(self) -> dict[str, Any]:
        """The review as the CLI and the docs show it (no location, no key)."""
        status, detail = self.outcome
        return {
            "state": self.state,
            "requestedAt": engine.epoch(self.tags.get(REQUESTED_AT)),
            "deadline": self.deadline,
            "decidedBy": self.tags.get(DECIDED_BY) or None,
            "decidedAt": engine.epoch(self.tags.get(DECIDED_AT)),
            "reason": self.tags.get(REASON) or None,
            "outcomeIfApproved": {"status": int(status), "statusText": status.text, "detail": detail},
            "held": self.held,
        }


def decision_problem(tags: Mapping[str, str], decision: str, now: float) -> str | None:
    """Why a review run may not take `decision` on the compute run with `tags` (a sentence), or None.

    A review releases what the job's own, paid run already produced: it runs nothing and needs no
    Provider stamp, but it acts only on a job parked at 55 and undecided, and never past its deadline
    (then expiry decides, so approval and expiry cannot both act).
    """
    if decision not in DECISIONS:
        return f"the decision must be one of {', '.join(DECISIONS)}, not {decision[:40]!r}"
    job_id = tags.get(engine.JOB_ID, "?")
    view = ReviewView(tags)
    if not view.state:
        return (
            f"job {job_id} is not held for review (its environment does not require review, or it "
            "ended before its results were stored)"
        )
    if not view.awaiting and view.state == "awaiting":
        return f"job {job_id} has ended without a decision: it is no longer awaiting review"
    if not view.awaiting:
        who = tags.get(DECIDED_BY)
        return f"job {job_id} was already decided: {view.state}" + (f" by {who}" if who else "")
    if view.expired(now):
        return (
            f"job {job_id} is past its review deadline: it expires (status 57) and can no longer be decided"
        )
    return None
