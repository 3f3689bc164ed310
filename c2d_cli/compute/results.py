"""`c2d compute results`: download every result of a finished job into a folder, each one checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from c2d_cli.cli_output import CliError, JsonOption, OutputOption, print_json, reported, wants_json
from c2d_cli.compute.context import consumer_command, err, find_job, finished_or_fail, out
from c2d_cli.compute.outcome import failure_of
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, ProviderUrlOption
from c2d_cli.consumer import download_results, result_entries


def compute_results(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write every result into.")],
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Download every result of a finished job (outputs and logs), each checked against its listed size."""
    json_output = wants_json(json_output, output)
    config, consumer, provider = consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            job = find_job(provider, consumer.address, job_id)
            finished_or_fail(job, "results")
            entries = result_entries(job)
            if not entries:
                raise CliError(f"the job {job_id} has no results (status {job['status']})")
            saved = download_results(provider, consumer, job, out_dir, entries)
        finally:
            provider.close()
    if json_output:
        print_json(
            [
                {
                    "index": item.index,
                    "type": item.type,
                    "filename": item.filename,
                    "path": str(item.path),
                    "filesize": item.filesize,
                    "sha256": item.sha256,
                }
                for item in saved
            ]
        )
        return
    table = Table(title=f"results of job {job_id} in {out_dir}", box=None, pad_edge=False)
    for column in ("index", "type", "file", "bytes", "sha256"):
        table.add_column(column, overflow="fold")
    for item in saved:
        table.add_row(str(item.index), str(item.type), item.path.name, str(item.filesize), item.sha256)
    out.print(table)
    failure = failure_of(job)
    if failure:
        err.print(
            f"[yellow]note:[/] the job failed ({escape(failure)}): these are its logs and what it wrote"
        )
