"""`c2d compute stop`: the signed stop; the algorithm is killed, what it wrote so far is still published."""

from __future__ import annotations

from typing import Annotated

import typer

from c2d_cli.cli_output import JsonOption, OutputOption, print_json, reported, wants_json
from c2d_cli.compute.context import consumer_command, err, find_job, out
from c2d_cli.compute.outcome import outcome_of
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, ProviderUrlOption
from c2d_cli.consumer import stop_job


def compute_stop(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Stop a job: the algorithm is killed; what it wrote so far and the logs are still published.

    A job that has already finished is left alone (nothing is signed or sent) and said to be finished.
    """
    json_output = wants_json(json_output, output)
    config, consumer, provider = consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            # Looked up first: a stop of a finished job would change nothing, and said "stop requested".
            job = find_job(provider, consumer.address, job_id)
            already_finished = bool(job.get("dateFinished"))
            if not already_finished:
                job = stop_job(provider, consumer, job_id)
        finally:
            provider.close()
    if json_output:
        print_json(job)
        return
    if already_finished:
        outcome = outcome_of(job)
        out.print(
            f"job {job_id} had already finished ({outcome}): status {job['status']} "
            f"{str(job['statusText']).strip()}; nothing to stop"
        )
        return
    out.print(f"stop requested for job {job_id} (status {job['status']} {str(job['statusText']).strip()})")
    out.print(f"its logs and outputs so far are published next: c2d compute status {job_id}")
