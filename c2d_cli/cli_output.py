"""What the `c2d` commands print: the consoles, and what they say when something fails (the problem in
one line, then what to do about it).

Provider refusals arrive in Ocean's shapes (`{"error": {"dataset": "no_raw_algo_allowed"}}`, field
errors, 503); each known code is turned into a sentence and a next step. Exit codes: 1 a request or a
setting failed, 2 bad arguments (typer's own), 3 the job ran and failed, 4 a job's results did not
verify against its signed attestation (`c2d compute verify`), 5 a wait (`--wait`, `--follow`) ran out
of time while the job goes on.

Only what `--help` needs is imported at the top (typer, rich's console): httpx, web3 and the like are
imported by the commands that use them, so every command starts quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from c2d_cli.config import CliConfig, ConfigError, Role, resolve

if TYPE_CHECKING:
    import httpx

    from c2d_cli.provider_client import ProviderClient, ProviderError

# Piped output is read by scripts and logs, not folded to a terminal's 80 columns.
PIPED_WIDTH = 160
EXIT_FAILED = 1
EXIT_JOB_FAILED = 3
EXIT_NOT_VERIFIED = 4
EXIT_TIMEOUT = 5
# `compute start --wait` on a job held by the review gate (55): not failed, not finished.
EXIT_AWAITING_REVIEW = 6

# Ocean's refusal codes → (what it means, what to do). `{input}` is the refused input's description.
CODE_ADVICE: Mapping[str, tuple[str, str]] = {
    "did_not_found": (
        "{input} is not an asset on the Provider's chain",
        "check the DID, and that --provider-url and --rpc-url point at the network it was published on",
    ),
    "no_raw_algo_allowed": (
        "{input} does not allow raw algorithms",
        "ask the publisher to trust your algorithm, or publish it (`c2d publish algorithm`) and ask them to "
        "add it with --trusted-algorithm",
    ),
    "not_trusted_algo": (
        "{input} does not trust this algorithm",
        "use an algorithm the dataset trusts, or ask its publisher to add yours (`c2d publish dataset "
        "--trusted-algorithm DID`)",
    ),
    "not_trusted_algo_publisher": (
        "{input} trusts only algorithms of certain publishers, and not this algorithm's",
        "ask the dataset's publisher to trust your algorithm or its publisher",
    ),
    "no_publisherTrustedAlgorithms": (
        "{input} has a malformed list of trusted algorithms",
        "ask the dataset's publisher to fix publisherTrustedAlgorithms",
    ),
    "algorithm_file_checksum_mismatch": (
        "the algorithm's files changed since {input}'s publisher trusted it",
        "ask the dataset's publisher to trust the algorithm's current files",
    ),
    "algorithm_container_checksum_mismatch": (
        "the algorithm's container changed since {input}'s publisher trusted it",
        "ask the dataset's publisher to trust the algorithm's current container",
    ),
    "not_algo": (
        "the --algorithm DID names an asset that is not an algorithm",
        "pass an algorithm's DID (`c2d asset show DID` shows an asset's type)",
    ),
    "did_mismatch": ("the algorithm's DDO carries another DID than the one asked for", ""),
    "file_unavailable": (
        "the Provider could not fetch the algorithm's files to check them",
        "the algorithm's file URLs must be reachable from the Provider; ask its publisher",
    ),
    "missing_entrypoint_image_checksum": (
        "the algorithm's container needs an entrypoint, an image and an image digest",
        "give --entrypoint and --image IMAGE:TAG@sha256:DIGEST (or --checksum sha256:DIGEST)",
    ),
    "checksum_prefix": (
        "the container checksum must start with sha256:",
        "give the image digest as sha256:<64 hex digits>",
    ),
    "checksum_format": (
        "the container checksum is not sha256: and 64 lowercase hex digits",
        "give the image digest as sha256:<64 hex digits>",
    ),
    "meta_oneof_url_rawcode_remote": (
        "the raw algorithm has no code",
        "pass a non-empty --raw-algorithm file",
    ),
    "meta_and_documentId": ("give a published algorithm or a raw one, not both", ""),
    "missing_meta_documentId": ("no algorithm was given", "pass --algorithm DID or --raw-algorithm FILE"),
    "main_service_compute": (
        "the first --dataset must be used through a compute service",
        "name its compute service as DID#SERVICE_ID (`c2d asset show DID` lists the services)",
    ),
    "service_not_access_compute": (
        "{input}'s service is neither an access nor a compute service",
        "name another service as DID#SERVICE_ID",
    ),
    "not_found": (
        "{input} has no service with that id",
        "name an existing service as DID#SERVICE_ID (`c2d asset show DID` lists the services)",
    ),
    "missing": ("{input} needs a service id", "name the service as DID#SERVICE_ID"),
    "asset_end_of_life": ("{input} has reached its end of life", "its publisher no longer serves it"),
    "asset_deprecated": ("{input} is deprecated", "ask its publisher which asset replaces it"),
    "asset_revoked": ("{input} was revoked by its publisher", ""),
    "asset_ordering_disabled": ("ordering {input} is disabled for now", "try again later"),
    "asset_state_unknown": ("{input} is in an unknown metadata state", ""),
    "asset_malformed": ("{input}'s DDO has no NFT address or chain id", "ask its publisher to fix it"),
    "credential_not_in_allow_list": (
        "your account is not in {input}'s allow list",
        "ask its publisher to allow your address, or use an allowed account",
    ),
    "credential_in_deny_list": ("your account is in {input}'s deny list", ""),
    "credential_type_unsupported": ("{input} restricts consumers in a way this Provider cannot check", ""),
    "credentials_malformed": ("{input} has malformed credentials", "ask its publisher to fix them"),
    "order_invalid": ("the order for {input} was refused", "run the command again to place a new order"),
    "in_use_or_not_on_chain": (
        "the order for the algorithm was refused",
        "run the command again to place a new order",
    ),
    "fees_not_paid": ("no order paid this environment's fee", "run the command again to place new orders"),
}


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts (same as -o json).")]
OutputOption = Annotated[
    str | None,
    typer.Option("--output", "-o", metavar="FORMAT", help="table (the default) or json.", show_default=False),
]
OUTPUT_FORMATS = ("table", "json")


def wants_json(json_flag: bool, output: str | None) -> bool:
    """Whether a command prints JSON: `--json`, or `-o/--output json` (kubectl's habit)."""
    if output is not None and output not in OUTPUT_FORMATS:
        raise typer.BadParameter(f"{output!r}: choose table or json", param_hint="'-o' / '--output'")
    if json_flag and output == "table":
        raise typer.BadParameter("--json and -o table contradict each other", param_hint="'--json'")
    return json_flag or output == "json"


DID_RE = re.compile(r"^did:op:[0-9a-fA-F]{64}$")


def print_json(value: Any) -> None:
    """JSON on stdout, for scripts (never wrapped or coloured when piped)."""
    stdout_console().print_json(json.dumps(value))


def check_did(did: str, what: str = "DID") -> str:
    if not DID_RE.match(did):
        raise typer.BadParameter(f"{what} {did!r} is not did:op: followed by 64 hex digits")
    return did.lower()


def open_provider(config: CliConfig) -> ProviderClient:
    """A client of the configured Provider, once `GET /` shows it is one and serves the configured chain."""
    # Imported here: eth_account takes a second to import, and `c2d --help` should not wait for it.
    from c2d_cli.provider_client import ProviderClient, ProviderError

    client = ProviderClient(config.require_provider())
    source = config.source_of("provider_url")
    try:
        try:
            root: Any = client.root()
        except ProviderError as error:
            root = error
        if not isinstance(root, dict) or not isinstance(root.get("serviceEndpoints"), dict):
            raise CliError(
                f"{client.url} does not answer like an Ocean Provider (GET / lists no serviceEndpoints)",
                f"the URL came from {source}: check it",
            )
        chains = [int(chain) for chain in root.get("chainIds") or []]
        if config.chain_id is not None and chains and config.chain_id not in chains:
            raise CliError(
                f"the Provider at {client.url} serves chain {', '.join(map(str, chains))}, not chain "
                f"{config.chain_id} (from {config.source_of('chain_id')})",
                "point --provider-url and --chain-id / --rpc-url at the same network",
            )
    except BaseException:
        client.close()
        raise
    return client


def stdout_console() -> Console:
    return Console(soft_wrap=True, highlight=False, width=_width(sys.stdout))


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False, width=_width(sys.stderr))


def _width(stream: object) -> int | None:
    if os.environ.get("COLUMNS") or getattr(stream, "isatty", lambda: False)():
        return None
    return PIPED_WIDTH


class CliError(Exception):
    """A failure the user can act on: `message` what went wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def describe_resource(resource: str, names: Mapping[str, str]) -> str:
    """`dataset.serviceId` → "the dataset did:op:…" using the DIDs the command sent."""
    base = resource.split(".", 1)[0]
    return names.get(base, f"the {base}")


def explain_provider_error(error: ProviderError, names: Mapping[str, str] | None = None) -> CliError:
    """A CliError for one of the Provider's error answers, in its words plus ours."""
    names = names or {}
    body: Any = error.body
    if error.status >= 500:
        detail = body.get("error") if isinstance(body, dict) else body
        return CliError(
            f"the Provider could not serve the request ({error.status}): {detail}",
            "try again later; if it persists, the Provider's operator can read its log",
        )
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        refusals = []
        hints = []
        for resource, code in body["error"].items():
            subject = describe_resource(str(resource), names)
            sentence, hint = CODE_ADVICE.get(str(code), (f"{{input}} was refused ({code})", ""))
            refusals.append(sentence.format(input=subject) + f" [{resource}: {code}]")
            if hint and hint not in hints:
                hints.append(hint)
        if body.get("message"):
            refusals.append(str(body["message"]))
        return CliError("; ".join(refusals), "; ".join(hints))
    if isinstance(body, dict) and isinstance(body.get("errors"), dict):
        fields = "; ".join(f"{name}: {_text(messages)}" for name, messages in body["errors"].items())
        return CliError(f"the Provider refused the request's fields: {fields}")
    message = body.get("error") if isinstance(body, dict) and "error" in body else body
    text = _text(message)
    if "environment does not exist" in text.lower():
        return CliError(f"the Provider says: {text}", "list the compute environments with `c2d envs`")
    if error.status == 404:
        return CliError(f"the Provider says: {text}")
    return CliError(f"the Provider refused the request ({error.status}): {text}")


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def unreachable_provider(url: str, source: str, error: httpx.HTTPError) -> CliError:
    import httpx

    reason = "timed out" if isinstance(error, httpx.TimeoutException) else "connection failed"
    return CliError(
        f"cannot reach the Provider at {url} ({reason})",
        f"the URL came from {source}: check it, or start the local stack with `c2d dev up`",
    )


def print_error(console: Console, error: CliError) -> None:
    console.print(f"[red bold]error:[/] {escape(error.message)}", highlight=False)
    if error.hint:
        console.print(f"  [yellow]→[/] {escape(error.hint)}", highlight=False)


def load_config(console: Console, role: Role, **options: Any) -> CliConfig:
    """The command's configuration, or a clear message and exit 1."""
    with reported(console):
        return resolve(role=role, **options)


@contextlib.contextmanager
def reported(console: Console, config: CliConfig | None = None) -> Iterator[None]:
    """Turn the failures a command can meet into one clear message and an exit code."""
    import httpx

    from c2d_cli.provider_client import ProviderError
    from c2d_core.chain import ChainError, TransactionReverted

    try:
        yield
    except CliError as error:
        print_error(console, error)
        raise typer.Exit(error.exit_code) from None
    except ConfigError as error:
        print_error(console, CliError(error.message, error.hint))
        raise typer.Exit(EXIT_FAILED) from None
    except ProviderError as error:
        print_error(console, explain_provider_error(error))
        raise typer.Exit(EXIT_FAILED) from None
    except httpx.InvalidURL as error:
        source = config.source_of("provider_url") if config else "the configuration"
        print_error(
            console, CliError(f"the Provider URL is not valid: {error}", f"it came from {source}: fix it")
        )
        raise typer.Exit(EXIT_FAILED) from None
    except httpx.TransportError as error:
        url = (config.provider_url if config else None) or (
            str(error.request.url) if _has_request(error) else "?"
        )
        source = config.source_of("provider_url") if config else "the configuration"
        print_error(console, unreachable_provider(url, source, error))
        raise typer.Exit(EXIT_FAILED) from None
    except TransactionReverted as error:
        print_error(console, CliError(f"a transaction was refused by the chain: {error}"))
        raise typer.Exit(EXIT_FAILED) from None
    except ChainError as error:
        message = str(error)
        if "address" in message and "cannot reach" not in message:
            hint = (
                "point C2D_ADDRESSES_FILE (or addresses_file in the config file) at Ocean's address.json "
                "with an entry for this chain"
            )
        else:
            hint = "check --rpc-url / C2D_RPC_URL and --chain-id, or start the local stack: `c2d dev up`"
        print_error(console, CliError(message, hint))
        raise typer.Exit(EXIT_FAILED) from None


def _has_request(error: httpx.HTTPError) -> bool:
    try:
        error.request  # noqa: B018 - raises RuntimeError when the error carries no request
    except RuntimeError:
        return False
    return True
