"""How `c2d compute status`, `list` and `--wait` show the filter stage (50, 61 from an output stage) and
the review gate (55 held, 56 rejected, 57 expired): the filter's own phase, a review phase only for
jobs that meet one, and `--wait` stopping at 55 with exit code 6 instead of polling to its timeout."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from c2d_cli.cli_output import EXIT_AWAITING_REVIEW, EXIT_JOB_FAILED, CliError
from c2d_cli.compute.context import finished_or_fail
from c2d_cli.compute.outcome import outcome_of, report_final
from c2d_cli.compute.progress import PhaseClock, follow_job, phase_rows
from c2d_cli.compute.start import follow_to_the_end
from c2d_cli.compute.status import _waiting, status_rows
from c2d_core.status import JobStatus

CONSUMER = SimpleNamespace(address="0x" + "c" * 40)
WITHHELD = "outputs withheld by the leak_filter stage: outputs/copy.csv is an exact copy of an input file"


def job(status: int, finished: str | None = None, **phases: tuple[str | None, str | None]) -> dict[str, Any]:
    return {
        "jobId": "f" * 32,
        "status": status,
        "statusText": JobStatus(status).text,
        "statusDetail": "",
        "dateCreated": "100.0",
        "dateFinished": finished,
        "phases": {name: {"started": edges[0], "finished": edges[1]} for name, edges in phases.items()},
        "terminationDetails": {"exitCode": 0, "OOMKilled": False, "reason": "Completed"},
        "results": [],
    }


def rows(job_json: dict[str, Any], now: float = 200.0) -> list[tuple[str, str, float | None]]:
    return [
        (row.name, row.state, None if row.elapsed is None else round(row.elapsed, 1))
        for row in phase_rows(job_json, now)
    ]


RAN = {"configure": ("101", "102"), "algorithm": ("102", "105")}


def test_a_job_in_the_filter_stage_shows_filtering_not_publishing() -> None:
    filtering = job(50, filter=("105", None), publish=(None, None), **RAN)
    assert rows(filtering, now=108.0) == [
        ("queued", "done", 1.0),
        ("provisioning", "done", 1.0),
        ("running", "done", 3.0),
        ("filtering", "active", 3.0),
        ("publishing", "waiting", None),
    ]
    # Status 50 alone (a Provider that sends no filter times yet) still names the phase.
    bare = job(50, publish=(None, None), **RAN)
    clock = PhaseClock()
    clock.observe(bare, 106.0)
    assert [row.name for row in phase_rows(bare, 108.0, clock)][3] == "filtering"


def test_a_job_without_output_stages_keeps_its_four_phases() -> None:
    done = job(70, "110", publish=("105", "109"), **RAN)
    assert [row.name for row in phase_rows(done, 500.0)] == [
        "queued",
        "provisioning",
        "running",
        "publishing",
    ]


def test_61_from_an_output_stage_fails_the_filtering_phase() -> None:
    refused = job(61, "112", filter=("105", "107"), publish=("107", "111"), **RAN)
    refused["statusDetail"] = WITHHELD
    assert rows(refused) == [
        ("queued", "done", 1.0),
        ("provisioning", "done", 1.0),
        ("running", "done", 3.0),
        ("filtering", "failed", 2.0),
        ("publishing", "done", 4.0),  # it ran: the logs were published
    ]
    assert outcome_of(refused) == "failed: outputs withheld by leak_filter"
    shown = dict(status_rows(refused, 500.0))
    assert shown["filtering"] == "failed, 2.0 s"
    assert WITHHELD in shown["outcome"]
    # 61 of a job that had no filter phase is still publish's.
    plain = job(61, "112", publish=("105", "111"), **RAN)
    assert rows(plain)[-1][:2] == ("publishing", "failed")


def test_a_job_held_for_review_is_not_finished_and_says_so() -> None:
    held = job(55, None, filter=("105", "106"), publish=("106", "108"), **RAN)
    assert rows(held, now=130.0)[-2:] == [("publishing", "done", 2.0), ("review", "held", 22.0)]
    shown = dict(status_rows(held, 130.0))
    assert shown["status"] == "55 Awaiting review"
    assert shown["review"] == "held for an operator's review, 22.0 s"
    assert "awaiting an operator's review" in shown["outcome"] and "56" in shown["outcome"]
    assert outcome_of(held) == "" and _waiting(held) == "awaiting an operator's review"
    # Its results and logs cannot be fetched yet, and the message says why.
    with pytest.raises(CliError, match="awaiting an operator's review"):
        finished_or_fail(held, "results")


@pytest.mark.parametrize(
    ("status", "words"),
    [(56, "failed: rejected by review"), (57, "failed: review deadline passed")],
)
def test_a_review_that_ended_the_job_fails_the_review_phase(status: int, words: str) -> None:
    ended = job(status, "200", publish=("105", "108"), **RAN)
    assert rows(ended)[-2:] == [("publishing", "done", 3.0), ("review", "failed", 92.0)]
    assert outcome_of(ended) == words


class Provider:
    """Answers status polls from a list; fails the test when polled past it."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.polls = 0

    def status(self, consumer: str, job_id: str) -> list[dict[str, Any]]:
        self.polls += 1
        assert self.answers, "polled after the job was held for review"
        return [self.answers.pop(0)]


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, force_terminal=False), buffer


def test_wait_stops_at_55_instead_of_polling_to_its_timeout() -> None:
    running = job(40, None, algorithm=("102", None), configure=("101", "102"))
    held = job(55, None, publish=("106", "108"), **RAN)
    provider = Provider([held])
    console, buffer = _console()
    final = follow_job(provider, "0xc", running, timeout=3600, console=console, live=False)  # type: ignore[arg-type]
    assert final["status"] == 55 and provider.polls == 1
    text = buffer.getvalue()
    assert "status 55 Awaiting review" in text and "review" in text


def test_wait_reports_a_held_job_with_exit_code_6() -> None:
    held = job(55, None, publish=("106", "108"), **RAN)
    console, buffer = _console()
    assert report_final(Provider([]), None, held, console) == EXIT_AWAITING_REVIEW  # type: ignore[arg-type]
    said = " ".join(buffer.getvalue().split())
    assert f"job {'f' * 32} is awaiting an operator's review" in said
    assert f"c2d compute status {'f' * 32}" in said
    # With --json as well: the job's JSON, and the same exit code (not 3: it has not failed).
    assert follow_to_the_end(Provider([]), CONSUMER, held, 10, json_output=True) == EXIT_AWAITING_REVIEW  # type: ignore[arg-type]
    rejected = {**job(56, "200", publish=("105", "108"), **RAN), "statusDetail": "the results were rejected"}
    assert follow_to_the_end(Provider([]), CONSUMER, rejected, 10, json_output=True) == EXIT_JOB_FAILED  # type: ignore[arg-type]
