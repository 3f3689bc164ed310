"""`c2d compute status` (one job: status, phases, results) and `c2d compute list` (your jobs, newest
first)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from c2d_cli.cli_output import JsonOption, print_json, reported
from c2d_cli.compute.context import consumer_command, err, find_job, out
from c2d_cli.compute.outcome import failure_of, results_asset_text
from c2d_cli.compute.progress import phase_rows
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, ProviderUrlOption
from c2d_cli.consumer import result_entries
from c2d_core.engine import epoch


def compute_status(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id `compute start` printed.")],
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Show one job: status, phases with their durations, results."""
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
    table.add_row("job", str(job["jobId"]))
    table.add_row(
        "status",
        f"{job['status']} {str(job['statusText']).strip()}"
        + (" (stop requested)" if job.get("stopreq") else ""),
    )
    if job.get("dateFinished"):
        failure = failure_of(job)
        outcome = "[green]succeeded[/]"
        if failure:
            outcome = f"[red]failed: {escape(failure)}[/]"
        elif job.get("stopreq"):
            outcome = "stopped on request (what it wrote so far is published)"
        table.add_row("outcome", outcome)
    elif job.get("statusDetail"):
        table.add_row("detail", str(job["statusDetail"]))
    created = epoch(job.get("dateCreated"))
    if created:
        table.add_row("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)))
    table.add_row("algorithm", str(job.get("algoDID")))
    table.add_row("inputs", ", ".join(job.get("inputDID") or []))
    termination = job.get("terminationDetails") or {}
    if termination.get("exitCode") is not None:
        table.add_row("exit code", str(termination["exitCode"]))
    for row in phase_rows(job, time.time()):
        table.add_row(row.name, row.state + (f", {row.elapsed:.1f} s" if row.elapsed is not None else ""))
    asset = results_asset_text(job)
    if asset:
        table.add_row("results asset", asset)
    for entry in result_entries(job):
        table.add_row(
            f"result {entry.get('index')}",
            f"{entry.get('filename')} ({entry.get('type')}, {entry.get('filesize')} bytes)",
        )
    out.print(table)


def compute_list(
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """List your jobs on the Provider, newest first."""
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
    for column in ("job", "status", "created", "took", "algorithm"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        created = epoch(job.get("dateCreated"))
        finished = epoch(job.get("dateFinished"))
        table.add_row(
            str(job["jobId"]),
            f"{job['status']} {str(job['statusText']).strip()}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "",
            f"{finished - created:.1f} s" if created and finished else "running",
            _short(str(job.get("algoDID"))),
        )
    out.print(table)


def _short(did: str) -> str:
    return did if len(did) < 20 else f"{did[:14]}…{did[-6:]}"
