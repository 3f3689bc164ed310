"""`c2d compute logs`: print one of a finished job's logs (the algorithm's by default); with --follow,
the algorithm's log as it is written, streamed by the Provider (computeStreamableLogs)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from c2d_cli.cli_output import CliError, JsonOption, OutputOption, print_json, reported, wants_json
from c2d_cli.compute.context import consumer_command, err, find_job, finished_or_fail
from c2d_cli.compute.outcome import failure_of
from c2d_cli.compute.progress import follow_job
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, ProviderUrlOption
from c2d_cli.consumer import download, result_entries
from c2d_core.live_logs import LIVE_LOG_CAP, truncation_line

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient

# --log choice → the results entry type the Provider lists it under.
LOG_TYPES = {"algorithm": "algorithmLog", "configuration": "configurationLog", "publish": "publishLog"}
# Ctrl-C while following: the shell's code for a command ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def compute_logs(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Print the algorithm's log as it is written, until the job ends.",
        ),
    ] = False,
    log: Annotated[
        str, typer.Option("--log", help="Which log: algorithm, configuration or publish.")
    ] = "algorithm",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --follow waits.")] = 900.0,
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Print a job's log (the algorithm's by default). Logs are published when the job ends.

    With --json (-o json): one object with the job id, which log, its file name, size and text.
    With --follow on a job that has not finished, the algorithm's log is printed as it is written and
    the command ends with the job; Ctrl-C stops following (exit 130), the job keeps running. The other
    logs, and --json, wait for the job to finish and then print.
    """
    json_output = wants_json(json_output, output)
    if log not in LOG_TYPES:
        raise typer.BadParameter(f"--log {log!r}: choose algorithm, configuration or publish")
    config, consumer, provider = consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            job = find_job(provider, consumer.address, job_id)
            live = follow and log == "algorithm" and not json_output and not job.get("dateFinished")
            if live and _print_live_log(provider, consumer, job_id):
                return
            if follow and not job.get("dateFinished"):
                job = follow_job(provider, consumer.address, job, timeout=timeout, console=err, live=False)
            finished_or_fail(job, "logs")
            entries = result_entries(job)
            entry = next((e for e in entries if e.get("type") == LOG_TYPES[log]), None)
            if entry is None:
                others = [name for name, kind in LOG_TYPES.items() for e in entries if e.get("type") == kind]
                raise CliError(
                    f"the job {job_id} published no {log} log "
                    f"({failure_of(job) or 'status ' + str(job['status'])})",
                    f"it has: {', '.join('--log ' + name for name in others)}" if others else "",
                )
            content = download(provider, consumer, job_id, entry)
        finally:
            provider.close()
    text = content.decode("utf-8", "replace")
    if json_output:
        print_json(
            {
                "jobId": job_id,
                "log": log,
                "type": entry.get("type"),
                "filename": entry.get("filename"),
                "filesize": len(content),
                "content": text,
            }
        )
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_live_log(provider: ProviderClient, consumer: LocalAccount, job_id: str) -> bool:
    """Print the job's algorithm log as the Provider streams it, until the job ends; False when this
    Provider has no computeStreamableLogs (the caller then waits for the published log)."""
    if "computeStreamableLogs" not in provider.root().get("serviceEndpoints", {}):
        return False
    cut = truncation_line("algorithm", LIVE_LOG_CAP).encode()
    tail = b""
    try:
        for chunk in provider.stream_logs(consumer, job_id):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            tail = (tail + chunk)[-len(cut) :]
    except KeyboardInterrupt:
        sys.stdout.flush()
        err.print(
            f"stopped following: job {job_id} keeps running "
            f"(c2d compute status {job_id}; c2d compute stop {job_id} stops it)"
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if tail == cut:
        err.print(f"the live log stops at its size limit: c2d compute logs {job_id} prints all of it")
    return True
