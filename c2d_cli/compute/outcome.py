"""How a job ended, in words: failed or not and why, its results asset, and the report `--wait` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from c2d_cli.cli_output import EXIT_AWAITING_REVIEW, EXIT_JOB_FAILED, CliError
from c2d_cli.consumer import download, result_entries
from c2d_core.status import ALGORITHM_FAILURES, JobStatus

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient


def awaiting_review(job: dict[str, Any]) -> bool:
    """Held by the review gate: 55 "Awaiting review" (ours, outside Ocean's codes), not finished. Its
    results are released when an operator approves them; a reject ends it 56, no decision before the
    environment's review deadline 57."""
    return int(job.get("status", 0)) == JobStatus.AWAITING_REVIEW and not job.get("dateFinished")


AWAITING_REVIEW_TEXT = "awaiting an operator's review"
REVIEW_HINT = (
    "its results are held until an operator approves them (a rejection ends the job at 56, no decision "
    "before the environment's review deadline at 57); until then `compute results` answers that they "
    "are held"
)


def failure_of(job: dict[str, Any]) -> str | None:
    """Why a finished job failed, or None. Like Ocean Node, a job whose algorithm ran and failed still
    ends at 70 (its logs are published): the termination details tell."""
    termination = job.get("terminationDetails") or {}
    reason = str(termination.get("reason") or "")
    exit_code = termination.get("exitCode")
    algorithm_failed = reason in ALGORITHM_FAILURES or (exit_code not in (None, 0) and reason != "Stopped")
    if int(job["status"]) == JobStatus.JOB_FINISHED and not algorithm_failed:
        return None
    if int(job["status"]) == JobStatus.JOB_FINISHED:
        detail = job.get("statusDetail") or f"the algorithm ended with {reason or f'exit code {exit_code}'}"
        return f"{detail} (its logs were published)"
    text = f"status {job['status']} {str(job['statusText']).strip()}"
    return text + (f": {job['statusDetail']}" if job.get("statusDetail") else "")


# How an algorithm's termination reads in one word or two (terminationDetails.reason).
TERMINATION_WORDS = {
    "OOMKilled": "out of memory",
    "DeadlineExceeded": "past its time limit",
    "DiskQuotaExceeded": "over its disk limit",
    "ImageNotFound": "image not found",
    "StartError": "could not start",
}


# Failure statuses whose text alone says how the job ended.
STATUS_WORDS: dict[int, str] = {
    JobStatus.REVIEW_REJECTED: "failed: rejected by review",
    JobStatus.REVIEW_EXPIRED: "failed: review deadline passed",
}


def outcome_of(job: dict[str, Any]) -> str:
    """A finished job's outcome in a few words (`succeeded`, `stopped`, `failed: out of memory`, …);
    "" while it runs. Status 70 alone does not tell: a failed or stopped algorithm ends at 70 too."""
    if not job.get("dateFinished"):
        return ""
    termination = job.get("terminationDetails") or {}
    reason = str(termination.get("reason") or "")
    if job.get("stopreq") or reason == "Stopped":
        return "stopped past its deadline" if str(job.get("stopreq")) == "2" else "stopped on request"
    if failure_of(job) is None:
        return "succeeded"
    status = int(job["status"])
    if status in STATUS_WORDS:
        return STATUS_WORDS[status]
    if status == JobStatus.RESULTS_FETCH_FAILED and str(job.get("statusDetail") or "").startswith(
        "outputs withheld by the "
    ):
        stage = str(job["statusDetail"]).removeprefix("outputs withheld by the ").split(" stage", 1)[0]
        return f"failed: outputs withheld by {stage}"
    if reason in TERMINATION_WORDS:
        return f"failed: {TERMINATION_WORDS[reason]}"
    exit_code = termination.get("exitCode")
    if int(job["status"]) == JobStatus.JOB_FINISHED and exit_code not in (None, 0):
        return f"failed: exit code {exit_code}"
    return f"failed: {job['status']} {str(job['statusText']).strip()}"


def results_asset_text(job: dict[str, Any]) -> str | None:
    """One line on the job's results asset (issue 8), or None when the job did not ask for one."""
    did = str(job.get("resultsDid") or "")
    asset = job.get("resultsAsset")
    if not isinstance(asset, dict):
        return did or None
    status = str(asset.get("status") or "")
    detail = str(asset.get("detail") or "")
    if status == "published" and did:
        return f"{did} (order its datatoken and download it like any Ocean asset)"
    if status == "pending":
        return "pending: published once the results are stored"
    return f"{status}: {detail}" if detail else status


def log_tail(provider: ProviderClient, consumer: LocalAccount, job: dict[str, Any], lines: int = 15) -> str:
    from c2d_cli.provider_client import ProviderError

    for entry in result_entries(job):
        if entry.get("type") == "algorithmLog":
            try:
                text = download(provider, consumer, job["jobId"], entry).decode("utf-8", "replace")
            except (CliError, ProviderError):
                return ""
            return "\n".join(text.rstrip().splitlines()[-lines:])
    return ""


def report_final(
    provider: ProviderClient, consumer: LocalAccount, job: dict[str, Any], console: Console
) -> int:
    """What the consumer needs after a job: its results, or why it failed, or that it waits for an
    operator's review. Returns the exit code (0, 3 failed, 6 awaiting review)."""
    job_id = job["jobId"]
    if awaiting_review(job):
        console.print(f"[yellow bold]job {job_id} is {AWAITING_REVIEW_TEXT}[/]: {escape(REVIEW_HINT)}")
        console.print(f"see where it stands with: c2d compute status {job_id}")
        return EXIT_AWAITING_REVIEW
    failure = failure_of(job)
    if failure is None:
        stopped = " (stopped on request: its outputs so far)" if job.get("stopreq") else ""
        console.print(f"[green]job {job_id} finished[/]{stopped}")
        table = Table(box=None, pad_edge=False)
        for column in ("index", "type", "file", "bytes"):
            table.add_column(column)
        for entry in result_entries(job):
            table.add_row(
                str(entry.get("index")),
                str(entry.get("type")),
                str(entry.get("filename")),
                str(entry.get("filesize")),
            )
        console.print(table)
        console.print(f"download them with: c2d compute results {job_id} --out DIR")
        asset = results_asset_text(job)
        if asset:
            console.print(f"results asset: {escape(asset)}")
        return 0
    console.print(f"[red bold]job {job_id} failed[/]: {escape(failure)}")
    tail = log_tail(provider, consumer, job)
    if tail:
        console.print("last lines of the algorithm's log:")
        console.print(Text(tail), style="dim")
    console.print(
        f"the whole log: c2d compute logs {job_id}; every result: c2d compute results {job_id} --out DIR"
    )
    return EXIT_JOB_FAILED
