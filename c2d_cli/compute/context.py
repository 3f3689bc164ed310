"""What every `c2d compute` command starts from: the consoles, the consumer's account and Provider, the
job looked up by id (with the message a wrong id or account deserves)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2d_cli import cli_output
from c2d_cli.cli_output import CliError, load_config, open_provider, reported
from c2d_cli.config import CliConfig
from c2d_core.status import JobStatus

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient

out = cli_output.stdout_console()
err = cli_output.stderr_console()


def consumer_command(
    provider_url: str | None,
    key_file: Path | None,
    account: int | None,
    home: Path | None,
    chain_id: int | None = None,
) -> tuple[CliConfig, LocalAccount, ProviderClient]:
    config = load_config(
        err,
        "consumer",
        provider_url=provider_url,
        chain_id=chain_id,
        key_file=key_file,
        account=account,
        home=home,
    )
    with reported(err, config):
        return config, config.account(), open_provider(config)


def find_job(provider: ProviderClient, consumer: str, job_id: str) -> dict[str, Any]:
    from c2d_cli.provider_client import ProviderError

    try:
        return provider.status(consumer, job_id)[0]
    except ProviderError as error:
        if error.status == 404:
            raise CliError(
                f"no job {job_id} for the account {consumer}",
                "check the job id (`c2d compute list`), and use the account that started it "
                "(--key-file, --account)",
            ) from None
        raise


def finished_or_fail(job: dict[str, Any], what: str) -> None:
    if int(job.get("status", 0)) == JobStatus.AWAITING_REVIEW and not job.get("dateFinished"):
        raise CliError(
            f"the job {job['jobId']} is awaiting an operator's review (status 55): its {what} are "
            "held until an operator approves or rejects them",
            f"look again later with `c2d compute status {job['jobId']}`",
        )
    if not job.get("dateFinished"):
        raise CliError(
            f"the job {job['jobId']} has not finished (status {job['status']} "
            f"{str(job['statusText']).strip()}): its {what} are published when it ends",
            f"wait for it with `c2d compute logs {job['jobId']} --follow`, or look with "
            f"`c2d compute status {job['jobId']}`",
        )
