"""`c2d compute stop`: the signed stop; the algorithm is killed, what it wrote so far is still published."""

from __future__ import annotations

from typing import Annotated

import typer

from c2d_cli.cli_output import JsonOption, print_json, reported
from c2d_cli.compute.context import consumer_command, err, find_job, out
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, ProviderUrlOption
from c2d_cli.consumer import stop_job


def compute_stop(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Stop a job: the algorithm is killed; what it wrote so far and the logs are still published."""
    from c2d_cli.provider_client import ProviderError

    config, consumer, provider = consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            try:
                job = stop_job(provider, consumer, job_id)
            except ProviderError as error:
                if error.status == 404:
                    find_job(provider, consumer.address, job_id)  # raises the clear "no job" message
                raise
        finally:
            provider.close()
    if json_output:
        print_json(job)
        return
    if job.get("dateFinished") and not job.get("stopreq"):
        out.print(
            f"job {job_id} had already finished: status {job['status']} {str(job['statusText']).strip()}"
        )
        return
    out.print(f"stop requested for job {job_id} (status {job['status']} {str(job['statusText']).strip()})")
    out.print(f"its logs and outputs so far are published next: c2d compute status {job_id}")
