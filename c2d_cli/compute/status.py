"""`c2d compute status` (one job: status, phases, results) and `c2d compute list` (your jobs, newest
first)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from c2d_cli.cli_output import JsonOption, OutputOption, print_json, reported, wants_json
from c2d_cli.compute.context import consumer_command, err, find_job, out
from c2d_cli.compute.outcome import (
    AWAITING_REVIEW_TEXT,
    REVIEW_HINT,
    awaiting_review,
    failure_of,
    outcome_of,
    results_asset_text,
)
from c2d_cli.compute.progress import phase_rows
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, ProviderUrlOption
from c2d_cli.consumer import result_entries
from c2d_core.engine import epoch


def compute_status(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id `compute start` printed.")],
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Show one job: status, phases with their durations, results."""
    json_output = wants_json(json_output, output)
    config, consumer, provider = consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            job = find_job(provider, consumer.address, job_id)
        finally:
            provider.close()
    if json_output:
        print_json(job)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in status_rows(job, time.time()):
        table.add_row(name, value)
    out.print(table)


# How a phase's state reads where it is not the plain word.
STATE_WORDS = {"held": "held for an operator's review"}


def status_rows(job: dict[str, Any], now: float) -> list[tuple[str, str]]:
    """What `compute status` shows of a job, row by row (name, value): outcome, queue position, …"""
    rows: list[tuple[str, str]] = []
    rows.append(("job", str(job["jobId"])))
    rows.append(
        (
            "status",
            f"{job['status']} {str(job['statusText']).strip()}"
            + (" (stop requested)" if job.get("stopreq") else ""),
        )
    )
    if job.get("dateFinished"):
        failure, outcome = failure_of(job), outcome_of(job)
        if outcome.startswith("stopped"):
            outcome += " (what it wrote so far is published)"
        elif failure:
            outcome = f"[red]{escape(outcome)}[/]: {escape(failure)}"
        else:
            outcome = f"[green]{outcome}[/]"
        rows.append(("outcome", outcome))
    elif awaiting_review(job):
        rows.append(("outcome", f"[yellow]{AWAITING_REVIEW_TEXT}[/]: {escape(REVIEW_HINT)}"))
    else:
        if job.get("queuePosition"):
            rows.append(("queue", f"position {job['queuePosition']} in its environment's queue"))
        if job.get("statusDetail"):
            rows.append(("detail", str(job["statusDetail"])))
    created = epoch(job.get("dateCreated"))
    if created:
        rows.append(("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))))
    rows.append(("algorithm", str(job.get("algoDID"))))
    rows.append(("inputs", ", ".join(job.get("inputDID") or [])))
    termination = job.get("terminationDetails") or {}
    if termination.get("exitCode") is not None:
        rows.append(("exit code", str(termination["exitCode"])))
    for row in phase_rows(job, now):
        state = STATE_WORDS.get(row.state, row.state)
        rows.append((row.name, state + (f", {row.elapsed:.1f} s" if row.elapsed is not None else "")))
    asset = results_asset_text(job)
    if asset:
        rows.append(("results asset", asset))
    for entry in result_entries(job):
        rows.append(
            (
                f"result {entry.get('index')}",
                f"{entry.get('filename')} ({entry.get('type')}, {entry.get('filesize')} bytes)",
            )
        )
    return rows


def compute_list(
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """List your jobs on the Provider, newest first."""
    json_output = wants_json(json_output, output)
    config, consumer, provider = consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            jobs = provider.status(consumer.address)
        finally:
            provider.close()
    jobs.sort(key=lambda job: epoch(job.get("dateCreated")) or 0.0, reverse=True)
    if json_output:
        print_json(jobs)
        return
    if not jobs:
        out.print(f"no jobs for {consumer.address} on {config.provider_url}")
        return
    table = Table(title=f"jobs of {consumer.address}", box=box.SIMPLE_HEAD)
    for column in ("job", "status", "outcome", "created", "took", "algorithm"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        created = epoch(job.get("dateCreated"))
        finished = epoch(job.get("dateFinished"))
        table.add_row(
            str(job["jobId"]),
            f"{job['status']} {str(job['statusText']).strip()}",
            outcome_of(job) or _waiting(job),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "",
            f"{finished - created:.1f} s"
            if created and finished
            else ("held" if awaiting_review(job) else "running"),
            str(job.get("algoDID") or "raw code"),
        )
    out.print(table)


def _waiting(job: dict[str, Any]) -> str:
    """What a job that has not finished waits for: a slot in the queue, or an operator's review."""
    if awaiting_review(job):
        return AWAITING_REVIEW_TEXT
    return f"queued, position {job['queuePosition']}" if job.get("queuePosition") else ""
