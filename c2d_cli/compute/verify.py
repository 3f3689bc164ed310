"""`c2d compute verify`: check a downloaded job's attestation, signed by the Provider's key, and every
result file in the folder against it (name, size, sha256); no file may be missing, changed or added.

The signature is checked against the address the Provider lists in `GET /` (`providerAddresses`, for
the attestation's chain), or one the user gives: with `--provider-address` nothing is asked of anyone.
No key is needed. Exit 0 verified, 4 (EXIT_NOT_VERIFIED) when a check fails, 1 when it cannot be checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from c2d_cli.cli_output import EXIT_NOT_VERIFIED, CliError, JsonOption, load_config, print_json, reported
from c2d_cli.compute.context import err, out
from c2d_cli.config import ChainIdOption, HomeOption, ProviderUrlOption
from c2d_core.workflow import ADDRESS_PATTERN, JOB_ID_PATTERN

if TYPE_CHECKING:
    from c2d_cli.provider_client import ProviderClient
    from c2d_core.attestation import Attestation


@dataclass(frozen=True)
class Check:
    """One row of the verdict: what was checked, on what, and how it came out."""

    check: Literal["signature", "job", "file"]
    subject: str
    ok: bool
    outcome: str
    detail: str


def compute_verify(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="The folder `c2d compute results --out` filled (with attestation.json).",
            show_default=False,
        ),
    ],
    provider_address: Annotated[
        str | None,
        typer.Option(
            "--provider-address",
            help="Expect this signer instead of the address the Provider lists in GET /.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table, or json (as --json).", show_default=False)
    ] = "table",
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Check a job's downloaded results against its attestation, signed by the Provider."""
    from c2d_core import attestation as att

    if output not in ("table", "json"):
        raise typer.BadParameter(f"-o {output!r}: choose table or json")
    as_json = json_output or output == "json"
    job_id = job_id.strip().lower()
    if not JOB_ID_PATTERN.match(job_id):
        raise typer.BadParameter(f"the job id {job_id!r} is not 32 hex digits")
    if provider_address is not None and not ADDRESS_PATTERN.match(provider_address):
        raise typer.BadParameter(f"--provider-address {provider_address!r} is not 0x and 40 hex digits")

    with reported(err):
        content = _read_attestation(directory, job_id)
        expected = provider_address or _provider_address(_chain_of(content), provider_url, chain_id, home)

    checks: list[Check] = []
    trusted: Attestation | None = None
    try:
        trusted = att.verify_attestation(content, expected)
    except att.AttestationError as error:
        checks.append(Check("signature", att.FILENAME, False, error.reason, error.message))
    else:
        checks.append(Check("signature", att.FILENAME, True, "ok", f"signed by the Provider {expected}"))
        same = trusted.job_id == job_id
        detail = f"the attestation is of job {trusted.job_id}" + ("" if same else f", not {job_id}")
        checks.append(Check("job", job_id, same, "ok" if same else "other_job", detail))
        for file in att.verify_files(trusted, directory):
            checks.append(Check("file", file.filename, file.ok, file.outcome, file.detail))
    verified = all(check.ok for check in checks)

    if as_json:
        print_json(
            {
                "jobId": job_id,
                "verified": verified,
                "expectedSigner": expected,
                "checks": [asdict(check) for check in checks],
                "attestation": trusted.document() if trusted is not None else None,
            }
        )
    else:
        _print_table(job_id, directory, checks, trusted)
        if verified:
            files = sum(1 for check in checks if check.check == "file")
            out.print(f"[green]verified:[/] job {job_id}, signed by {expected}; {files} file(s) match")
        else:
            failed = sum(1 for check in checks if not check.ok)
            err.print(
                f"[red bold]not verified:[/] {failed} check(s) failed for job {job_id} "
                f"in {escape(str(directory))}"
            )
            if trusted is None:
                err.print(
                    "  [yellow]→[/] the files were not checked: an attestation whose signature fails "
                    "vouches for nothing"
                )
    if not verified:
        raise typer.Exit(EXIT_NOT_VERIFIED)


def _read_attestation(directory: Path, job_id: str) -> bytes:
    from c2d_core.attestation import FILENAME

    path = directory / FILENAME
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not directory.is_dir():
            raise CliError(
                f"{directory} is not a folder",
                f"download the job's results first: `c2d compute results {job_id} --out {directory}`",
            ) from None
        raise CliError(
            f"there is no {FILENAME} in {directory}",
            f"download all of the job's results: `c2d compute results {job_id} --out {directory}` (a job "
            "that finished before this Provider signed attestations has none)",
        ) from None
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None


def _chain_of(content: bytes) -> int | None:
    """The chain the attestation names, to pick the Provider's address for it; None if it cannot be read
    (the signature check then says what is wrong with the document)."""
    try:
        chain = json.loads(content)["attestation"]["chainId"]
    except (ValueError, KeyError, TypeError):
        return None
    return chain if isinstance(chain, int) and not isinstance(chain, bool) else None


def _provider_address(
    chain: int | None, provider_url: str | None, chain_id: int | None, home: Path | None
) -> str:
    from c2d_cli.cli_output import open_provider

    config = load_config(err, "consumer", provider_url=provider_url, chain_id=chain_id, home=home)
    with reported(err, config):
        provider = open_provider(config)
        try:
            return provider_address_for(provider, chain if chain is not None else config.chain_id)
        finally:
            provider.close()


def provider_address_for(provider: ProviderClient, chain: int | None) -> str:
    """The address the Provider signs with on `chain`, as its `GET /` lists it."""
    root: Any = provider.root()
    addresses = root.get("providerAddresses") if isinstance(root, dict) else None
    if not isinstance(addresses, dict) or not addresses:
        raise CliError(
            f"the Provider at {provider.url} lists no providerAddresses in GET /",
            "give the address to expect with --provider-address",
        )
    if chain is None and len(addresses) == 1:
        return str(next(iter(addresses.values())))
    address = addresses.get(str(chain))
    if not isinstance(address, str):
        served = ", ".join(sorted(addresses))
        raise CliError(
            f"the attestation is for chain {chain}; the Provider at {provider.url} signs for chain {served}",
            "point --provider-url at the Provider that ran the job, or give --provider-address",
        )
    return address


def _print_table(job_id: str, directory: Path, checks: list[Check], trusted: Attestation | None) -> None:
    if trusted is not None:
        algorithm = trusted.algorithm.did or f"raw code sha256 {trusted.algorithm.rawcode_sha256}"
        container = trusted.algorithm.container
        image = f"{container.image}:{container.tag}" + (
            f" ({container.checksum})" if container.checksum else ""
        )
        out.print(
            f"job {trusted.job_id} on chain {trusted.chain_id}, environment {escape(trusted.environment)}: "
            f"status {trusted.status} {escape(trusted.status_text.strip())}, "
            f"{trusted.date_started} → {trusted.date_finished}"
        )
        out.print(f"inputs: {', '.join(item.did for item in trusted.inputs)}")
        out.print(f"algorithm: {algorithm}, image {escape(image)}")
    table = Table(title=f"checks of job {job_id} in {escape(str(directory))}", box=None, pad_edge=False)
    for column in ("check", "subject", "result", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        result = "[green]ok[/]" if check.ok else f"[red]{escape(check.outcome)}[/]"
        table.add_row(check.check, escape(check.subject), result, escape(check.detail))
    out.print(table)
