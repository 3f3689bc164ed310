"""`c2d balance`: what an account holds on the chain, the gas coin, Ocean's token, the datatokens of
the assets named, so a consumer sees before a start whether it can pay (and a publisher whom to mint to)."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Annotated, Any

import typer

from c2d_cli import cli_output
from c2d_cli.cli_output import (
    CliError,
    JsonOption,
    OutputOption,
    check_did,
    load_config,
    print_json,
    reported,
    wants_json,
)
from c2d_cli.config import AccountOption, ChainIdOption, HomeOption, KeyFileOption, RpcUrlOption

if TYPE_CHECKING:
    from c2d_core.chain import Chain

out = cli_output.stdout_console()
err = cli_output.stderr_console()
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def balance_command(
    asset: Annotated[
        list[str] | None,
        typer.Option("--asset", help="Also the datatokens of this asset (DID; repeatable)."),
    ] = None,
    token: Annotated[
        list[str] | None, typer.Option("--token", help="Also this ERC-20 token (address; repeatable).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Any address (no key needed); default: your account's."),
    ] = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    home: HomeOption = None,
) -> None:
    """Show an account's balances: the chain's coin (gas), Ocean's token, and datatokens of --asset."""
    json_output = wants_json(json_output, output)
    dids = [check_did(did, "--asset") for did in asset or []]
    for value in token or []:
        if not ADDRESS.match(value):
            raise typer.BadParameter(f"--token {value!r} is not a 0x address (40 hex digits)")
    if address is not None and not ADDRESS.match(address):
        raise typer.BadParameter(f"--address {address!r} is not a 0x address (40 hex digits)")
    config = load_config(
        err, "consumer", rpc_url=rpc_url, chain_id=chain_id, key_file=key_file, account=account, home=home
    )
    with reported(err, config):
        from web3 import Web3

        holder = Web3.to_checksum_address(address) if address else config.account().address
        chain = config.connect_chain()
        rows = holdings(chain, holder, dids, list(token or []), config.provider_key_file)
    if json_output:
        print_json({"address": holder, "chainId": chain.chain_id, "balances": rows})
        return
    from rich.table import Table

    source = "--address" if address else config.key_description
    table = Table(title=f"{holder} ({source}) on chain {chain.chain_id}", box=None, pad_edge=False)
    for column in ("what", "balance", "token"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["what"]), f"{row['balance']:g}", str(row["token"] or "(native)"))
    out.print(table)


def holdings(
    chain: Chain, holder: str, dids: list[str], tokens: list[str], provider_key_file: Any
) -> list[dict[str, Any]]:
    """One row per balance: the native coin, Ocean's token (when the chain has its address), then each
    --token, then each datatoken of each asset; amounts in whole tokens (18 decimals)."""
    from c2d_cli.commands_publish import read_chain_asset
    from c2d_core.chain import ChainError
    from c2d_core.fees import ONE_TOKEN

    native = chain.w3.eth.get_balance(holder)  # type: ignore[arg-type]  # a checksummed str
    rows: list[dict[str, Any]] = [{"what": "native coin (gas)", "token": None, "balance": native / ONE_TOKEN}]

    def erc20(what: str, address: str) -> dict[str, Any]:
        contract = chain.contracts.at("ERC20Template", address)
        return {
            "what": what,
            "token": address,
            "balance": contract.functions.balanceOf(holder).call() / ONE_TOKEN,
        }

    # A chain without Ocean's addresses: only what was asked for.
    with contextlib.suppress(ChainError):
        rows.append(erc20("Ocean", chain.address("Ocean")))
    rows.extend(erc20("token", address) for address in tokens)
    for did in dids:
        found = read_chain_asset(chain, did, provider_key_file)
        if found is None:
            raise CliError(f"--asset {did} is not an asset on chain {chain.chain_id}", "check the DID")
        rows.extend(erc20(f"datatoken of {did}", datatoken) for datatoken in found.datatokens)
    return rows
