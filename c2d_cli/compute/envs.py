"""`c2d envs`: the Provider's compute environments, and the one a start runs in."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from c2d_cli.cli_output import (
    CliError,
    JsonOption,
    OutputOption,
    load_config,
    open_provider,
    print_json,
    reported,
    wants_json,
)
from c2d_cli.compute.context import err, out
from c2d_cli.config import ChainIdOption, HomeOption, ProviderUrlOption


def envs_command(
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """List the Provider's compute environments: limits, price, and how busy each is."""
    json_output = wants_json(json_output, output)
    config = load_config(err, "reader", provider_url=provider_url, chain_id=chain_id, home=home)
    with reported(err, config):
        provider = open_provider(config)
        try:
            chain = config.chain_id
            if chain is None:
                chains = [int(c) for c in provider.root().get("chainIds", [])]
                if len(chains) != 1:
                    raise CliError(
                        f"the Provider serves chains {chains}: which one?",
                        "pass --chain-id or set C2D_CHAIN_ID",
                    )
                chain = chains[0]
            environments = provider.environments(chain)
        finally:
            provider.close()
    if json_output:
        print_json(environments)
        return
    if not environments:
        out.print(f"the Provider at {config.provider_url} has no compute environment on chain {chain}")
        return
    table = Table(title=f"compute environments of {config.provider_url} (chain {chain})", box=box.SIMPLE_HEAD)
    for column in (
        "id",
        "CPU",
        "RAM GB",
        "disk GB",
        "max s",
        "jobs (running/queued/max)",
        "price/min",
        "network",
    ):
        table.add_column(column, overflow="fold")
    for env in environments:
        table.add_row(
            str(env["id"]),
            str(env.get("cpuNumber")),
            str(env.get("ramGB")),
            str(env.get("diskGB")),
            str(env.get("maxJobDuration")),
            f"{env.get('currentJobs')}/{env.get('queuedJobs')}/{env.get('maxJobs')}",
            str(env.get("priceMin")),
            "yes" if env.get("allowNetwork") else "no",
        )
    out.print(table)


def choose_environment(environments: list[dict[str, Any]], env_id: str | None) -> dict[str, Any]:
    if not environments:
        raise CliError("the Provider offers no compute environment on this chain")
    if env_id is None:
        return environments[0]
    for env in environments:
        if env["id"] == env_id:
            return env
    ids = ", ".join(str(env["id"]) for env in environments)
    raise CliError(
        f"the Provider has no compute environment {env_id!r}", f"choose one of: {ids} (`c2d envs`)"
    )
