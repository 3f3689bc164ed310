"""`c2d publish dataset|algorithm` and `c2d asset show`: what a publisher touches first.

Publishing creates the data NFT and its datatoken, encrypts the files through the Provider, sets the DDO
on chain (compressed and encrypted for the Provider, as ocean.py does) and mints datatokens. Reading an
asset back needs no Aquarius: the DDO is read from the chain, and decrypted only where this machine holds
the Provider's key (the embedded stack); elsewhere the on-chain facts are shown without it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from c2d_cli import cli_output
from c2d_cli import config as cli_config
from c2d_cli.cli_output import (
    CliError,
    JsonOption,
    OutputOption,
    check_did,
    explain_provider_error,
    load_config,
    open_provider,
    print_json,
    reported,
    wants_json,
)
from c2d_cli.config import (
    AccountOption,
    ChainIdOption,
    CliConfig,
    HomeOption,
    KeyFileOption,
    ProviderUrlOption,
    RpcUrlOption,
)
from c2d_core.ocean.metadata_states import state_label

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient
    from c2d_core.chain import Chain

publish_app = typer.Typer(
    help="Publish a dataset or an algorithm: NFT + datatoken, files encrypted for the Provider, the DDO "
    "on chain, datatokens minted. Prints the DID.",
    no_args_is_help=True,
)
asset_app = typer.Typer(help="Read a published asset from the chain.", no_args_is_help=True)

out = cli_output.stdout_console()
err = cli_output.stderr_console()

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_MINT = 5

DescriptionOption = Annotated[
    str | None,
    typer.Option(
        "--description", help="What the asset holds, for its DDO (default: its name).", show_default=False
    ),
]
AuthorOption = Annotated[
    str | None,
    typer.Option(
        "--author", help="Who made it, for its DDO (default: the publisher's address).", show_default=False
    ),
]
# The options `publish dataset` and `publish algorithm` share.
MintToOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mint-to", help="Mint datatokens to this address (repeatable; local chain default: account 2)."
    ),
]
MintAmountOption = Annotated[int, typer.Option("--mint-amount", min=1, help="Datatokens per address.")]
OrderTimeoutOption = Annotated[
    int, typer.Option("--timeout", min=0, help="Seconds an order stays valid (0: forever).")
]

# --- reading an asset from the chain ---------------------------------------------------------------


@dataclass
class ChainAsset:
    """What the chain says about a DID; `ddo` is None when it is encrypted for a Provider we cannot be."""

    did: str
    nft: str
    owner: str
    state: int
    chain_id: int
    decryptor_url: str
    flags: int
    created_block: int
    updated_block: int
    datatokens: list[str]
    ddo: dict[str, Any] | None
    unreadable: str = ""

    def service(self, service_id: str | None, *, compute: bool) -> tuple[str, int] | None:
        """(service id, index) by id, or the first compute service (or first service) when none is named."""
        if self.ddo is None:
            return None
        # Indexes into the DDO's own list: an order names its service by that position.
        services = [(i, s) for i, s in enumerate(self.ddo.get("services") or []) if isinstance(s, dict)]
        if service_id is not None:
            return next(((service_id, i) for i, s in services if str(s.get("id")) == service_id), None)
        for index, service in services:
            if not compute or service.get("type") == "compute":
                return str(service.get("id")), index
        return (str(services[0][1].get("id")), services[0][0]) if services else None


def read_chain_asset(chain: Chain, did: str, provider_key_file: Path | None) -> ChainAsset | None:
    """The asset as the chain holds it; its DDO decrypted where this machine holds the Provider's key."""
    from c2d_core.ocean.ddo_reader import FLAG_ENCRYPTED, ChainDdoReader, DidMismatchError, datatokens_of

    decrypt = None
    if provider_key_file is not None:
        from c2d_core.publishing import ecies_decryptor

        decrypt = ecies_decryptor(provider_key_file.read_text().strip())
    found = ChainDdoReader(chain, decrypt).read(did)
    if found is None:
        return None
    datatokens = datatokens_of(chain, found.nft)
    latest = found.latest
    if latest is None:
        return ChainAsset(
            did=did,
            nft=found.nft,
            owner=found.owner,
            state=found.state,
            chain_id=chain.chain_id,
            decryptor_url="",
            flags=0,
            created_block=0,
            updated_block=0,
            datatokens=datatokens,
            ddo=None,
            unreadable="no metadata was set",
        )
    unreadable = ""
    if isinstance(found.error, DidMismatchError):
        unreadable = str(found.error)
    elif found.error is not None and latest.flags & FLAG_ENCRYPTED and decrypt is None:
        unreadable = (
            f"the DDO is encrypted for the Provider at {latest.decryptor_url}; only it can read it "
            "(on the embedded stack, c2d reads it with the stack's provider key)"
        )
    elif found.error is not None:
        unreadable = str(found.error)
    return ChainAsset(
        did=found.did,
        nft=found.nft,
        owner=found.owner,
        state=found.state,
        chain_id=chain.chain_id,
        decryptor_url=latest.decryptor_url,
        flags=latest.flags,
        created_block=found.events[0].block,
        updated_block=latest.block,
        datatokens=datatokens,
        ddo=found.ddo,
        unreadable=unreadable,
    )


def without_secrets(ddo: dict[str, Any]) -> dict[str, Any]:
    """The DDO for display: each service's encrypted `files` replaced by a note (never decrypted)."""
    services = []
    for service in ddo.get("services", []):
        if isinstance(service, dict) and "files" in service:
            files = str(service["files"])
            service = {**service, "files": f"<encrypted for the Provider, {len(files)} hex characters>"}
        services.append(service)
    return {**ddo, "services": services}


# --- talking to the Provider ----------------------------------------------------------------------


def fileinfo(provider: ProviderClient, body: dict[str, Any], timeout: float = 120.0) -> list[dict[str, Any]]:
    """The Provider's `fileinfo`, or a clear error when it does not serve one."""
    if "fileinfo" not in provider.root()["serviceEndpoints"]:
        raise CliError(f"the Provider at {provider.url} does not serve fileinfo")
    return provider.fileinfo(body, timeout=timeout)


def check_provider_serves(provider: ProviderClient, config: CliConfig, chain_id: int) -> dict[str, Any]:
    root = provider.root()
    chains = [int(value) for value in root.get("chainIds", [])]
    if chain_id not in chains:
        raise CliError(
            f"the Provider at {provider.url} serves chain {', '.join(map(str, chains)) or 'none'}, "
            f"but the RPC at {config.rpc_url} is chain {chain_id}",
            f"point --provider-url ({config.source_of('provider_url')}) and --rpc-url "
            f"({config.source_of('rpc_url')}) at the same network",
        )
    return root


def file_objects(urls: list[str]) -> list[dict[str, Any]]:
    """Ocean `url` file objects; a local path is refused with how to serve it (it has no URL to encrypt)."""
    objects = []
    for value in urls:
        if re.match(r"^https?://", value):
            objects.append({"type": "url", "url": value, "method": "GET"})
            continue
        if Path(value).exists():
            raise CliError(
                f"{value} is a local file: a DDO holds URLs, which the configure step fetches on every job",
                "serve it from a web server that stays up (for a try on the embedded stack: `python -m "
                f"http.server 8000 --bind 127.0.0.1 --directory {Path(value).parent or '.'}`, then --file "
                f"http://127.0.0.1:8000/{Path(value).name}; the embedded Provider accepts loopback URLs, a "
                "production Provider only public ones)",
            )
        raise CliError(f"--file {value!r} is not an http(s) URL", "give the URL the data is served at")
    return objects


def mint_holders(config: CliConfig, mint_to: list[str] | None, flag: str = "--mint-to") -> list[str]:
    """Who gets datatokens: --mint-to, else on the local chain its default consumer."""
    from c2d_core.chain import DEV_CHAIN_ID, dev_account

    if mint_to is not None:
        holders = mint_to
    elif config.chain_id == DEV_CHAIN_ID:
        holders = [dev_account(cli_config.DEV_ROLE_ACCOUNTS["consumer"]).address]
    else:
        holders = []
    for holder in holders:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", holder):
            raise typer.BadParameter(f"{flag} {holder!r} is not a 0x address (40 hex digits)")
    return holders


# --- trusted algorithms ---------------------------------------------------------------------------


def trust_spec(entry: dict[str, str]) -> str:
    """The `--trusted-algorithm` value that reproduces a trust entry: DID:FILES:CONTAINER."""
    return f"{entry['did']}:{entry['filesChecksum']}:{entry['containerSectionChecksum']}"


def parse_trust_spec(spec: str) -> dict[str, str] | str:
    """`*`, `DID` (returned as is, to be looked up) or `DID:FILESCHECKSUM:CONTAINERCHECKSUM` (an entry)."""
    if spec == "*":
        return "*"
    parts = spec.split(":")
    if len(parts) == 3:
        return check_did(spec, "--trusted-algorithm")
    if len(parts) != 5:
        raise typer.BadParameter(
            f"--trusted-algorithm {spec!r}: give a DID or DID:FILESCHECKSUM:CONTAINERCHECKSUM "
            "(as `c2d publish algorithm` prints it)"
        )
    did = check_did(":".join(parts[:3]), "--trusted-algorithm")
    files, container = parts[3].lower(), parts[4].lower()
    if not files or len(files) % 64 or not re.fullmatch(r"[0-9a-f]+", files):
        raise typer.BadParameter(f"--trusted-algorithm {spec!r}: FILESCHECKSUM is sha256 hex digests, joined")
    if not SHA256_HEX.match(container):
        raise typer.BadParameter(f"--trusted-algorithm {spec!r}: CONTAINERCHECKSUM is one sha256 hex digest")
    return {"did": did, "filesChecksum": files, "containerSectionChecksum": container}


def trust_entry_for(did: str, chain: Chain, provider: ProviderClient, config: CliConfig) -> dict[str, str]:
    """Pin an algorithm by DID: its files' checksum as the Provider computes it, its container's from
    the DDO (readable where this machine holds the Provider's key)."""
    from c2d_cli.provider_client import ProviderError
    from c2d_core.ocean.checksums import container_section_checksum, files_checksum

    full_form = (
        "pass --trusted-algorithm DID:FILESCHECKSUM:CONTAINERCHECKSUM, as `c2d publish algorithm` printed it"
    )
    asset = read_chain_asset(chain, did, config.provider_key_file)
    if asset is None:
        raise CliError(
            f"--trusted-algorithm {did} is not an asset on chain {chain.chain_id}", "check the DID"
        )
    if asset.ddo is None:
        raise CliError(f"cannot read the DDO of the algorithm {did}: {asset.unreadable}", full_form)
    metadata = asset.ddo.get("metadata") or {}
    container = (metadata.get("algorithm") or {}).get("container")
    if metadata.get("type") != "algorithm" or not isinstance(container, dict):
        raise CliError(f"--trusted-algorithm {did} is not an algorithm (its DDO has no container)")
    found = asset.service(None, compute=False)
    service_id = found[0] if found else "access"
    try:
        infos = fileinfo(provider, {"did": did, "serviceId": service_id, "checksum": 1})
    except ProviderError as error:
        detail = explain_provider_error(error).message
        raise CliError(
            f"the Provider did not checksum the files of {did} ({detail}); this Provider may not offer "
            "fileinfo by DID yet",
            full_form,
        ) from None
    digests = [str(info.get("checksum") or "") for info in infos]
    if not infos or not all(
        info.get("valid") and SHA256_HEX.match(d) for info, d in zip(infos, digests, strict=True)
    ):
        reasons = "; ".join(str(info.get("error") or "no checksum") for info in infos) or "no files"
        raise CliError(f"the Provider could not checksum the files of {did}: {reasons}", full_form)
    try:
        container_checksum = container_section_checksum(container)
    except ValueError as error:
        raise CliError(f"the algorithm {did} has an unusable container: {error}") from None
    return {
        "did": did,
        "filesChecksum": files_checksum(digests),
        "containerSectionChecksum": container_checksum,
    }


# --- commands -------------------------------------------------------------------------------------


@dataclass
class Published:
    did: str
    nft: str
    datatoken: str
    service_id: str
    minted_to: list[str]
    amount: int


@contextlib.contextmanager
def publishing(config: CliConfig) -> Iterator[tuple[LocalAccount, Chain, ProviderClient]]:
    """The publisher's key, the chain and the Provider, checked to be on the same network."""
    publisher = config.account()
    chain = config.connect_chain()
    provider = open_provider(config)
    try:
        check_provider_serves(provider, config, chain.chain_id)
        yield publisher, chain, provider
    finally:
        provider.close()


def _publish(
    chain: Chain,
    publisher: LocalAccount,
    provider: ProviderClient,
    *,
    name: str,
    files: list[dict[str, Any]],
    asset_type: str,
    service_type: str,
    holders: list[str],
    amount: int,
    compute: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    timeout: int,
    description: str | None = None,
    author: str | None = None,
) -> Published:
    from c2d_cli.publisher import mint_to, publish_asset

    asset = publish_asset(
        chain,
        publisher,
        provider,
        name=name,
        files=files,
        asset_type=asset_type,
        service_type=service_type,
        compute=compute,
        container=container,
        timeout=timeout,
        description=description,
        author=author,
    )
    for holder in holders:
        mint_to(chain, publisher, asset, holder, amount)
    return Published(asset.did, asset.nft, asset.datatoken, asset.service_id, holders, amount)


def _print_published(kind: str, published: Published, extra: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("DID", published.did)
    table.add_row("data NFT", published.nft)
    table.add_row("datatoken", published.datatoken)
    table.add_row("service", published.service_id)
    minted = ", ".join(published.minted_to) or "nobody (mint later, or pass --mint-to)"
    table.add_row(
        "minted", f"{published.amount} datatokens each to {minted}" if published.minted_to else minted
    )
    for key, value in extra.items():
        table.add_row(key, value)
    out.print(f"[green]published the {kind}[/] {published.did}")
    out.print(table)


@publish_app.command("dataset")
def publish_dataset(
    name: Annotated[str, typer.Option("--name", help="The dataset's name.")],
    file: Annotated[
        list[str],
        typer.Option("--file", help="A URL the data is served at (repeat for several files); kept secret."),
    ],
    compute: Annotated[
        bool,
        typer.Option(
            "--compute/--access",
            help="Offer the data for compute only (the data never leaves), or for download.",
        ),
    ] = True,
    allow_raw_algorithm: Annotated[
        bool, typer.Option("--allow-raw-algorithm", help="Let consumers send unpublished code.")
    ] = False,
    trusted_algorithm: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-algorithm",
            help="An algorithm allowed to run on the data: DID, or DID:FILESCHECKSUM:CONTAINERCHECKSUM, "
            "or '*' for any (repeatable). Without any, no published algorithm may run.",
        ),
    ] = None,
    trusted_publisher: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-publisher", help="Trust every algorithm published by this address (repeatable)."
        ),
    ] = None,
    allow_network: Annotated[
        bool, typer.Option("--allow-network", help="Let algorithms reach the network (off by default).")
    ] = False,
    mint_to: MintToOption = None,
    mint_amount: MintAmountOption = DEFAULT_MINT,
    timeout: OrderTimeoutOption = 3600,
    description: DescriptionOption = None,
    author: AuthorOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    home: HomeOption = None,
) -> None:
    """Publish a dataset whose files stay secret: consumers get only what trusted algorithms compute."""
    json_output = wants_json(json_output, output)
    specs = [parse_trust_spec(spec) for spec in trusted_algorithm or []]
    publishers = list(trusted_publisher or [])
    for address in publishers:
        if address != "*" and not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
            raise typer.BadParameter(f"--trusted-publisher {address!r} is not a 0x address")
    if not compute and (specs or publishers or allow_raw_algorithm or allow_network):
        raise typer.BadParameter("trust and network options apply to --compute datasets only")
    config = load_config(
        err,
        "publisher",
        provider_url=provider_url,
        rpc_url=rpc_url,
        chain_id=chain_id,
        key_file=key_file,
        account=account,
        home=home,
    )
    with reported(err, config):
        files = file_objects(file)
        holders = mint_holders(config, mint_to)
        with publishing(config) as (publisher, chain, provider):
            compute_section: dict[str, Any] | None = None
            if compute:
                entries = [
                    trust_entry_for(spec, chain, provider, config)
                    if isinstance(spec, str) and spec != "*"
                    else spec
                    for spec in specs
                ]
                compute_section = {
                    "allowRawAlgorithm": allow_raw_algorithm,
                    "allowNetworkAccess": allow_network,
                    "publisherTrustedAlgorithms": entries,
                    "publisherTrustedAlgorithmPublishers": publishers,
                }
                if not entries and not publishers and not allow_raw_algorithm:
                    err.print(
                        "[yellow]note:[/] no algorithm may run on this dataset yet: it trusts none and "
                        "refuses raw code (add --trusted-algorithm, --trusted-publisher or "
                        "--allow-raw-algorithm)"
                    )
            _warn_unreachable(provider, files)
            err.print(
                f"publishing as {publisher.address} ({config.key_description}) on chain {chain.chain_id}…"
            )
            published = _publish(
                chain,
                publisher,
                provider,
                name=name,
                files=files,
                asset_type="dataset",
                service_type="compute" if compute else "access",
                holders=holders,
                amount=mint_amount,
                compute=compute_section,
                timeout=timeout,
                description=description,
                author=author,
            )
    if json_output:
        print_json({**published.__dict__, "compute": compute_section})
        return
    trusted = ", ".join(
        e["did"] if isinstance(e, dict) else str(e)
        for e in (compute_section or {}).get("publisherTrustedAlgorithms", [])
    )
    _print_published(
        "dataset",
        published,
        {
            "compute": "raw algorithms allowed" if allow_raw_algorithm else "published algorithms only",
            "trusts": trusted or "no published algorithm",
        }
        if compute
        else {"access": "download service"},
    )


def _warn_unreachable(provider: ProviderClient, files: list[dict[str, Any]]) -> None:
    """The Provider's view of each file; unreachable is only a warning: the configure step may see more."""
    from c2d_cli.provider_client import ProviderError

    for index, file_object in enumerate(files):
        try:
            info = fileinfo(provider, file_object)[0]
        except ProviderError as error:
            raise explain_provider_error(error) from None
        if not info.get("valid"):
            err.print(
                f"[yellow]note:[/] the Provider cannot reach file {index} now "
                f"({escape(str(info.get('error')))}); jobs fail while the configure step cannot either"
            )


def parse_image(image: str, tag: str | None, checksum: str | None) -> tuple[str, str, str | None]:
    """IMAGE[:TAG][@sha256:DIGEST] plus --tag/--checksum → (image, tag, digest)."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    name, _, image_tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not name:
        name, image_tag = image, ""
    if tag and image_tag and tag != image_tag:
        raise typer.BadParameter(f"--image {image} names tag {image_tag}, --tag says {tag}")
    if checksum and digest and checksum != digest:
        raise typer.BadParameter("--image names a digest and --checksum another")
    digest = checksum or digest
    if digest is not None and not DIGEST_RE.match(digest):
        raise typer.BadParameter(f"the image digest {digest!r} is not sha256: and 64 lowercase hex digits")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:-]*", name):
        raise typer.BadParameter(f"--image {name!r} is not an image name")
    return name, tag or image_tag or "latest", digest


def container_for(
    image: str, tag: str | None, checksum: str | None, entrypoint: str, chain_id: int | None
) -> dict[str, str]:
    """An Ocean algorithm container; Ocean requires the image digest, so one must be given."""
    from c2d_core.chain import DEV_CHAIN_ID

    name, image_tag, digest = parse_image(image, tag, checksum)
    if digest is None:
        hint = "give --checksum sha256:DIGEST or --image IMAGE:TAG@sha256:DIGEST (as `docker pull` prints it)"
        if chain_id == DEV_CHAIN_ID:
            from c2d_cli.publisher import SAMPLE_CONTAINER

            hint += (
                "; on the embedded stack any digest of a python image runs on the host's Python, e.g. "
                f"--checksum {SAMPLE_CONTAINER['checksum']}"
            )
        raise CliError("the algorithm's container needs its image digest (Ocean pins images by digest)", hint)
    if not entrypoint.strip():
        raise typer.BadParameter("--entrypoint is empty")
    return {"entrypoint": entrypoint, "image": name, "tag": image_tag, "checksum": digest}


@publish_app.command("algorithm")
def publish_algorithm(
    file: Annotated[
        list[str],
        typer.Option(
            "--file",
            help="The URL the algorithm's code is served at (repeatable); a local path is refused, see "
            "docs/cli.md.",
        ),
    ],
    image: Annotated[
        str, typer.Option("--image", help="Container image: IMAGE, IMAGE:TAG or IMAGE:TAG@sha256:DIGEST.")
    ],
    entrypoint: Annotated[
        str, typer.Option("--entrypoint", help="Command run in the container; $ALGO is the code's path.")
    ],
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (or put it in --image).")] = None,
    checksum: Annotated[
        str | None, typer.Option("--checksum", help="Image digest sha256:… (or put it in --image).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="The algorithm's name.")] = "Algorithm",
    mint_to: MintToOption = None,
    mint_amount: MintAmountOption = DEFAULT_MINT,
    timeout: OrderTimeoutOption = 3600,
    description: DescriptionOption = None,
    author: AuthorOption = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    home: HomeOption = None,
) -> None:
    """Publish an algorithm and print the DID and the trust entry a dataset's publisher adds for it."""
    json_output = wants_json(json_output, output)
    from c2d_core.ocean.checksums import container_section_checksum, files_checksum, validate_container
    from c2d_core.ocean.refusals import PolicyError

    config = load_config(
        err,
        "publisher",
        provider_url=provider_url,
        rpc_url=rpc_url,
        chain_id=chain_id,
        key_file=key_file,
        account=account,
        home=home,
    )
    with reported(err, config):
        files = file_objects(file)
        container = container_for(image, tag, checksum, entrypoint, config.chain_id)
        try:
            validate_container(container)
        except PolicyError as error:
            raise CliError(f"the container is not valid: {error.message}") from None
        holders = mint_holders(config, mint_to)
        with publishing(config) as (publisher, chain, provider):
            digests = []
            for index, file_object in enumerate(files):
                info = fileinfo(provider, {**file_object, "checksum": 1})[0]
                if not info.get("valid") or not info.get("checksum"):
                    raise CliError(
                        f"the Provider cannot fetch file {index} ({info.get('error') or 'no checksum'})",
                        "an algorithm's files must stay reachable from the Provider: it checks them "
                        "against the datasets' trust entries",
                    )
                digests.append(str(info["checksum"]))
            err.print(
                f"publishing as {publisher.address} ({config.key_description}) on chain {chain.chain_id}…"
            )
            published = _publish(
                chain,
                publisher,
                provider,
                name=name,
                files=files,
                asset_type="algorithm",
                service_type="access",
                holders=holders,
                amount=mint_amount,
                container=container,
                timeout=timeout,
                description=description,
                author=author,
            )
    entry = {
        "did": published.did,
        "filesChecksum": files_checksum(digests),
        "containerSectionChecksum": container_section_checksum(container),
    }
    if json_output:
        print_json(
            {
                **published.__dict__,
                "container": container,
                "trustedAlgorithmEntry": entry,
                "trustSpec": trust_spec(entry),
            }
        )
        return
    _print_published(
        "algorithm",
        published,
        {"container": f"{container['image']}:{container['tag']}@{container['checksum']}"},
    )
    out.print("a dataset's publisher trusts exactly these files and this container with:")
    out.print(f"  c2d publish dataset … --trusted-algorithm {trust_spec(entry)}")


@publish_app.command("mint")
def publish_mint(
    did: Annotated[str, typer.Argument(help="The asset's DID (did:op:…).")],
    amount: Annotated[int, typer.Option("--amount", min=1, help="Datatokens per address.")] = DEFAULT_MINT,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="Who gets them (repeatable; local chain default: account 2)."),
    ] = None,
    datatoken: Annotated[
        str | None,
        typer.Option("--datatoken", help="Which of the asset's datatokens (default: its only one)."),
    ] = None,
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    home: HomeOption = None,
) -> None:
    """Mint more datatokens of a published asset (each pays for one order); the key must be a minter."""
    json_output = wants_json(json_output, output)
    did = check_did(did)
    config = load_config(
        err,
        "publisher",
        provider_url=provider_url,
        rpc_url=rpc_url,
        chain_id=chain_id,
        key_file=key_file,
        account=account,
        home=home,
    )
    with reported(err, config):
        holders = mint_holders(config, to, "--to")
        if not holders:
            raise typer.BadParameter("give --to ADDRESS (who gets the datatokens)")
        publisher = config.account()
        chain = config.connect_chain()
        token = _datatoken_to_mint(chain, did, datatoken, config)
        contract = chain.contracts.at("ERC20Template", token)
        if not contract.functions.isMinter(publisher.address).call():
            raise CliError(
                f"{publisher.address} ({config.key_description}) may not mint the datatoken {token} of {did}",
                "mint with the key that published the asset, or have the NFT's owner add this address as a "
                "minter",
            )
        from c2d_core.fees import ONE_TOKEN
        from c2d_core.publishing import mint

        for holder in holders:
            mint(chain, publisher, token, holder, amount * ONE_TOKEN)
        balances = {h: int(contract.functions.balanceOf(h).call()) / ONE_TOKEN for h in holders}
    if json_output:
        print_json(
            {"did": did, "datatoken": token, "amount": amount, "mintedTo": holders, "balances": balances}
        )
        return
    out.print(f"minted {amount} datatokens of {did} (datatoken {token}) to each of:")
    for holder, balance in balances.items():
        out.print(f"  {holder}  now holds {balance:g}")


def _datatoken_to_mint(chain: Chain, did: str, chosen: str | None, config: CliConfig) -> str:
    asset = read_chain_asset(chain, did, config.provider_key_file)
    if asset is None:
        raise CliError(f"no asset {did} on chain {chain.chain_id}", "check the DID and --rpc-url")
    if chosen is not None:
        if chosen.lower() not in {token.lower() for token in asset.datatokens}:
            raise CliError(
                f"{chosen} is not a datatoken of {did}", f"its datatokens: {', '.join(asset.datatokens)}"
            )
        return chosen
    if len(asset.datatokens) != 1:
        raise CliError(
            f"{did} has {len(asset.datatokens)} datatokens: which one?",
            f"pass --datatoken, one of: {', '.join(asset.datatokens) or 'none'}",
        )
    return asset.datatokens[0]


@asset_app.command("show")
def asset_show(
    did: Annotated[str, typer.Argument(help="The asset's DID (did:op:…).")],
    json_output: JsonOption = False,
    output: OutputOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    provider_url: ProviderUrlOption = None,
    home: HomeOption = None,
) -> None:
    """Print an asset's DDO from the chain, without secrets (its files stay encrypted).

    The DDO is encrypted for its Provider: c2d reads it where it holds that Provider's key (the embedded
    stack), and otherwise prints what the chain says in the clear (owner, state, datatokens, Provider).
    """
    json_output = wants_json(json_output, output)
    did = check_did(did)
    config = load_config(
        err, "reader", provider_url=provider_url, rpc_url=rpc_url, chain_id=chain_id, home=home
    )
    with reported(err, config):
        chain = config.connect_chain()
        asset = read_chain_asset(chain, did, config.provider_key_file)
        if asset is None:
            raise CliError(
                f"no asset {did} on chain {chain.chain_id} (RPC {config.rpc_url})",
                f"check the DID, and that --rpc-url ({config.source_of('rpc_url')}) is the network it was "
                "published on",
            )
    ddo = without_secrets(asset.ddo) if asset.ddo is not None else None
    facts = {
        "did": asset.did,
        "chainId": asset.chain_id,
        "nftAddress": asset.nft,
        "owner": asset.owner,
        "state": asset.state,
        "provider": asset.decryptor_url,
        "flags": asset.flags,
        "createdBlock": asset.created_block,
        "updatedBlock": asset.updated_block,
        "datatokens": asset.datatokens,
    }
    if json_output:
        print_json({**facts, "ddo": ddo, **({"ddoUnreadable": asset.unreadable} if ddo is None else {})})
        return
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in facts.items():
        if key == "state":
            value = f"{value} ({state_label(asset.state)})"
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    if ddo is not None:
        metadata = ddo.get("metadata") or {}
        table.add_row("type", str(metadata.get("type")))
        table.add_row("name", str(metadata.get("name")))
        for index, service in enumerate(ddo.get("services", [])):
            compute = service.get("compute") or {}
            trusted = compute.get("publisherTrustedAlgorithms") or []
            details = f"{service.get('type')}, datatoken {service.get('datatokenAddress')}"
            if service.get("type") == "compute":
                details += (
                    f", raw algorithms {'allowed' if compute.get('allowRawAlgorithm') else 'refused'}"
                    f", network {'allowed' if compute.get('allowNetworkAccess') else 'off'}"
                    f", trusts {len(trusted)} algorithm(s)"
                )
            table.add_row(f"service {index}", f"{service.get('id')} ({details})")
    out.print(table)
    if ddo is None:
        out.print(f"[yellow]{escape(asset.unreadable)}[/]")
    else:
        out.print("DDO (files stay encrypted):")
        print_json(ddo)
