"""What `compute start`'s flags name, checked before any call: the inputs (DID or DID#SERVICE_ID, their
services read from the DDO where this machine can), a raw algorithm, its custom data, Ocean's `output`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from c2d_cli.cli_output import CliError, check_did
from c2d_cli.commands_publish import container_for, read_chain_asset
from c2d_cli.config import CliConfig
from c2d_cli.consumer import Target

if TYPE_CHECKING:
    from c2d_core.chain import Chain


def parse_input(value: str, role: str) -> tuple[str, str | None]:
    """`DID` or `DID#SERVICE_ID` (a DID URL naming one service)."""
    did, _, service_id = value.partition("#")
    return check_did(did, f"--{role}"), service_id or None


def resolve_targets(
    config: CliConfig, chain: Chain, inputs: list[tuple[str, str | None]], *, role: str
) -> list[Target]:
    """Service ids and indexes: read from the DDO where this machine can read it, else Ocean's defaults."""
    default_service = "compute" if role == "dataset" else "access"
    key_file = config.provider_key_file
    targets = []
    for did, service_id in inputs:
        label = f"the {role} {did}"
        if key_file is None:
            targets.append(Target(did, service_id or default_service, 0, label))
            continue
        asset = read_chain_asset(chain, did, key_file)
        if asset is None:
            raise CliError(
                f"{label} is not an asset on chain {chain.chain_id}",
                "check the DID, and that --rpc-url and --provider-url point at the network it was "
                "published on",
            )
        found = asset.service(service_id, compute=role == "dataset")
        if found is None:
            raise CliError(
                f"{label} has no {'service ' + repr(service_id) if service_id else 'usable service'}",
                "name an existing service as DID#SERVICE_ID (`c2d asset show DID` lists them)",
            )
        targets.append(Target(did, found[0], found[1], label))
    return targets


def raw_algorithm_meta(
    path: Path, image: str | None, checksum: str | None, entrypoint: str | None, chain_id: int | None
) -> dict[str, Any]:
    if not image or not entrypoint:
        raise typer.BadParameter("--raw-algorithm needs --image IMAGE:TAG@sha256:DIGEST and --entrypoint")
    try:
        code = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"cannot read --raw-algorithm {path}: {error}") from None
    if not code.strip():
        raise typer.BadParameter(f"--raw-algorithm {path} is empty")
    return {"rawcode": code, "container": container_for(image, None, checksum, entrypoint, chain_id)}


def parse_custom_data(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"--algocustomdata is not JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter('--algocustomdata must be a JSON object, e.g. \'{"column": "temp_c"}\'')
    return value


def output_request(
    publish: bool,
    name: str | None,
    description: str | None,
    tags: list[str] | None,
    license_name: str | None,
    owner: str | None,
    publish_log: bool,
) -> dict[str, Any] | None:
    """Ocean's `output` object for the start request, or None when nothing is to be published.

    Checked here only for what a flag can get wrong; the Provider validates the object (sizes, types)
    and answers with the field at fault.
    """
    extras = {
        "--output-name": name,
        "--output-description": description,
        "--output-tag": tags,
        "--output-license": license_name,
        "--output-owner": owner,
    }
    if not publish:
        given = [flag for flag, value in extras.items() if value] + (["--publish-log"] if publish_log else [])
        if given:
            raise typer.BadParameter(f"{', '.join(given)}: only with --publish-output")
        return None
    if not name or not name.strip():
        raise typer.BadParameter("--publish-output needs --output-name NAME (the new asset's name)")
    from c2d_core.workflow import ADDRESS_PATTERN

    if owner is not None and not ADDRESS_PATTERN.fullmatch(owner):
        raise typer.BadParameter(f"--output-owner {owner!r} is not an address (0x and 40 hex digits)")
    metadata: dict[str, Any] = {"name": name.strip()}
    if description:
        metadata["description"] = description
    if tags:
        metadata["tags"] = list(tags)
    if license_name:
        metadata["license"] = license_name
    return {
        "publishOutput": True,
        "publishAlgorithmLog": publish_log,
        "metadata": metadata,
        **({"owner": owner} if owner else {}),
    }
