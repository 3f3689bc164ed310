"""What `c2d admin review` can know of a job is what the Dagster webserver's GraphQL API shows of its
run: the visible tags only (Dagster hides every tag under `.dagster/`). These checks hold the review
contract to that: the tags the operator view reads are visible, the outcome approval gives is read
under its visible name and, for jobs parked before, its hidden one; a job whose visible outcome says it
ended (or was refused) is not awaiting review, and a decision on it is refused; a refused run is not a
job's own run even when only its visible tags are known. The same against the real webserver:
tests/e2e/test_review_flow.py."""

from __future__ import annotations

import json

from dagster._core.storage.tags import TagType, get_tag_type

from c2d_cli.admin import _run, own_run
from c2d_core import engine, review

JOB = "0123456789abcdef0123456789abcdef"
AWAITING = {engine.JOB_ID: JOB, engine.STATUS: "55", review.STATE: "awaiting"}


def test_what_the_operator_view_reads_is_visible_and_the_held_list_is_not() -> None:
    for name in (
        review.STATE,
        review.REQUESTED_AT,
        review.DEADLINE,
        review.DECIDED_BY,
        review.DECIDED_AT,
        review.REASON,
        review.OUTCOME,
        engine.OUTCOME,
        engine.STATUS,
    ):
        assert get_tag_type(name) is not TagType.HIDDEN, name
    # The held list is read from the store's held manifest: its copy on the run stays out of the UI.
    for name in (review.HELD, review.LEGACY_OUTCOME, engine.DATE_FINISHED, engine.REFUSED):
        assert get_tag_type(name) is TagType.HIDDEN, name


def test_the_outcome_is_read_under_its_visible_name_then_its_old_hidden_one() -> None:
    visible = {**AWAITING, review.OUTCOME: json.dumps({"status": 42, "detail": "over its disk limit"})}
    assert review.ReviewView(visible).outcome == (42, "over its disk limit")
    older = {**AWAITING, review.LEGACY_OUTCOME: json.dumps({"status": 62, "detail": "salvaged"})}
    assert review.ReviewView(older).outcome == (62, "salvaged")
    both = {**visible, **older}
    assert review.ReviewView(both).outcome == (42, "over its disk limit")
    assert review.ReviewView(visible).summary()["outcomeIfApproved"] == {
        "status": 42,
        "statusText": "Error: disk quota exceeded",
        "detail": "over its disk limit",
    }


def test_a_visible_outcome_means_the_job_ended_and_cannot_be_decided() -> None:
    assert review.ReviewView(AWAITING).awaiting
    assert review.decision_problem(AWAITING, "approve", 0) is None
    ended = "has ended without a decision: it is no longer awaiting review"
    for tags in (
        {**AWAITING, engine.OUTCOME: "succeeded"},  # what GraphQL shows of a finished job
        {**AWAITING, engine.DATE_FINISHED: "12.000"},  # what run storage shows of it
        {**AWAITING, engine.OUTCOME: engine.REFUSED_OUTCOME},  # a refused launchpad copy
    ):
        assert not review.ReviewView(tags).awaiting, tags
        assert review.decision_problem(tags, "reject", 0) == f"job {JOB} {ended}", tags
    decided = {**AWAITING, review.STATE: "approved", review.DECIDED_BY: "alice", engine.OUTCOME: "succeeded"}
    assert (
        review.decision_problem(decided, "reject", 0) == f"job {JOB} was already decided: approved by alice"
    )


def test_a_refused_run_is_not_the_jobs_own_from_its_visible_tags() -> None:
    assert own_run(AWAITING)
    assert not own_run({**AWAITING, engine.OUTCOME: engine.REFUSED_OUTCOME})
    assert not own_run({**AWAITING, engine.REFUSED: "already has its run"})
    assert not own_run({**AWAITING, "dagster/parent_run_id": "r1"})
    # A run written before the state tags were hidden shows them under their old visible names.
    shown = _run(
        {"runId": "r2", "tags": [{"key": "c2d/refused", "value": "x"}, {"key": "c2d/job_id", "value": JOB}]}
    )
    assert not own_run(shown["tags"])
    old = _run({"runId": "r3", "tags": [{"key": k, "value": v} for k, v in AWAITING.items()]})
    assert review.ReviewView(old["tags"]).awaiting
    old_finished = [
        *({"key": k, "value": v} for k, v in AWAITING.items()),
        {"key": "c2d/date_finished", "value": "1"},
    ]
    assert not review.ReviewView(_run({"runId": "r4", "tags": old_finished})["tags"]).awaiting
