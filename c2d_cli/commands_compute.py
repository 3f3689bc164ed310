"""`c2d envs` and `c2d compute …`: what a consumer runs, from the first quote to the downloaded results.

`compute start` does what ocean.py's `start_compute_job` does: `initializeCompute`, one order per input
(`startOrder`, or `reuseOrder` when the Provider names a valid order that needs a new fee), the signed
start, and with `--wait` follows the job through its phases. Tables for people, `--json` for scripts.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from c2d_cli import cli_output
from c2d_cli.cli_output import (
    EXIT_JOB_FAILED,
    CliError,
    JsonOption,
    check_did,
    explain_provider_error,
    load_config,
    open_provider,
    print_json,
    reported,
)
from c2d_cli.commands_publish import check_provider_serves, container_for, read_chain_asset
from c2d_cli.config import (
    AccountOption,
    ChainIdOption,
    CliConfig,
    HomeOption,
    KeyFileOption,
    ProviderUrlOption,
    RpcUrlOption,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient
    from c2d_core.chain import Chain

compute_app = typer.Typer(
    help="Run an algorithm on datasets you may not download, and fetch what it computed.",
    no_args_is_help=True,
)

out = cli_output.stdout_console()
err = cli_output.stderr_console()

DT = 10**18
# Orders (and so the provider fees, priced per minute) cover the environment's longest job plus this
# much time to wait for a slot.
QUEUE_ALLOWANCE = 600
POLL_SECONDS = 0.5
FINISHED = 70
# Which phase a failure status belongs to (Ocean's codes, c2d_core.status).
FAILED_IN = {
    2: "queued",
    **dict.fromkeys((11, 21, 22, 31, 32, 33), "provisioning"),
    **dict.fromkeys((41, 42), "running"),
    **dict.fromkeys((61, 62), "publishing"),
}
# The user's phases and the engine's stage each one is (None: waiting for a slot).
PHASES: tuple[tuple[str, str | None], ...] = (
    ("queued", None),
    ("provisioning", "configure"),
    ("running", "algorithm"),
    ("publishing", "publish"),
)
STATUS_PHASE = {
    1: "queued",
    **dict.fromkeys((10, 20, 30), "provisioning"),
    40: "running",
    **dict.fromkeys((50, 60), "publishing"),
}
# terminationDetails.reason values that mean the algorithm ran and did not succeed.
ALGORITHM_FAILURES = frozenset({"Error", "OOMKilled", "DeadlineExceeded", "DiskQuotaExceeded"})
LOG_TYPES = {"algorithm": "algorithmLog", "configuration": "configurationLog", "publish": "publishLog"}


# --- environments ---------------------------------------------------------------------------------


def envs_command(
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """List the Provider's compute environments: limits, price, and how busy each is."""
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


# --- placing orders -------------------------------------------------------------------------------


@dataclass
class Target:
    """One thing to order: a dataset (or the published algorithm), its service and where it sits."""

    did: str
    service_id: str
    service_index: int
    label: str  # "the dataset did:op:…", for messages


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


def _erc20(chain: Chain, address: str) -> Any:
    return chain.contracts.at("ERC20Template", address)


def check_can_pay(chain: Chain, consumer: str, pairs: list[tuple[Target, dict[str, Any]]]) -> None:
    """Before any transaction: gas money, one datatoken per new order, and the provider fees' tokens.

    Checked for every input first, so a missing token never leaves some datatokens spent and no job.
    """
    from web3 import Web3

    paying = any("providerFee" in answer for _, answer in pairs)
    if paying and chain.w3.eth.get_balance(Web3.to_checksum_address(consumer)) == 0:
        raise CliError(
            f"the account {consumer} has no native coin to pay for the order transactions' gas",
            "fund it, or pick another account (--key-file, C2D_PRIVATE_KEY; --account on the local chain)",
        )
    fees: dict[str, int] = {}
    for target, answer in pairs:
        if "providerFee" not in answer:
            continue
        fee = answer["providerFee"]
        if int(fee.get("providerFeeAmount", 0)):
            token = str(fee["providerFeeToken"])
            fees[token] = fees.get(token, 0) + int(fee["providerFeeAmount"])
        if "validOrder" in answer:
            continue  # reuseOrder spends no datatoken
        datatoken = str(answer["datatoken"])
        if int(_erc20(chain, datatoken).functions.balanceOf(consumer).call()) < DT:
            raise CliError(
                f"the account {consumer} holds no datatoken of {target.label} (datatoken {datatoken}); "
                "each new order spends one",
                "get one from the asset's publisher (they mint with `c2d publish … --mint-to ADDRESS`), "
                "or use an account that holds some (--key-file; --account N on the local chain)",
            )
    for token, amount in fees.items():
        if int(_erc20(chain, token).functions.balanceOf(consumer).call()) < amount:
            raise CliError(
                f"the provider fees need {amount / DT:g} of the token {token}, which {consumer} "
                "does not hold",
                "fund the account with that token, or choose a cheaper environment (`c2d envs`)",
            )


def place_orders(
    chain: Chain,
    consumer: LocalAccount,
    env: dict[str, Any],
    pairs: list[tuple[Target, dict[str, Any]]],
    say: Callable[[str], None],
) -> list[str]:
    """One order transaction id per input, in order: reused as is, reused with a new fee, or new."""
    from c2d_core.fees import ProviderFee, approve, reuse_order, start_order

    orders = []
    for target, answer in pairs:
        if "providerFee" not in answer:
            orders.append(str(answer["validOrder"]))
            say(f"reusing the valid order {answer['validOrder']} for {target.label}")
            continue
        fee = ProviderFee.from_wire(answer["providerFee"])
        datatoken = str(answer["datatoken"])
        if fee.provider_fee_amount:
            token = _erc20(chain, fee.provider_fee_token)
            allowed = int(token.functions.allowance(consumer.address, datatoken).call())
            if allowed < fee.provider_fee_amount:
                approve(chain, consumer, fee.provider_fee_token, datatoken, fee.provider_fee_amount)
        if "validOrder" in answer:
            tx = reuse_order(chain, consumer, datatoken, str(answer["validOrder"]), fee)
            say(f"reuseOrder for {target.label}: {tx}")
        else:
            tx = start_order(
                chain, consumer, datatoken, str(env["consumerAddress"]), target.service_index, fee
            )
            say(f"startOrder for {target.label}: {tx}")
        orders.append(tx)
    return orders


def order_validity(env: dict[str, Any]) -> int:
    """Seconds the orders stay valid: as long as a job may run in `env`, plus the queue allowance."""
    try:
        longest = int(env.get("maxJobDuration") or 0)
    except (TypeError, ValueError):
        longest = 0
    return (longest or 3600) + QUEUE_ALLOWANCE


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
    if owner is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", owner):
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


def results_asset_text(job: dict[str, Any]) -> str | None:
    """One line on the job's results asset (issue 8), or None when the job did not ask for one."""
    did = str(job.get("resultsDid") or "")
    asset = job.get("resultsAsset")
    if not isinstance(asset, dict):
        return did or None
    status = str(asset.get("status") or "")
    detail = str(asset.get("detail") or "")
    if status == "published" and did:
        return f"{did} (order its datatoken and download it like any Ocean asset)"
    if status == "pending":
        return "pending: published once the results are stored"
    return f"{status}: {detail}" if detail else status


# --- following a job ------------------------------------------------------------------------------


def _epoch(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass
class PhaseRow:
    name: str
    state: str  # waiting | active | done | failed | skipped
    elapsed: float | None


@dataclass
class PhaseClock:
    """When this client first saw each phase: the fallback for Providers that send no phase times."""

    seen: dict[str, float] = field(default_factory=dict)

    def observe(self, job: dict[str, Any], now: float) -> None:
        phase = STATUS_PHASE.get(int(job.get("status", 0)))
        if phase and phase not in self.seen:
            self.seen[phase] = now


def phase_rows(job: dict[str, Any], now: float, clock: PhaseClock | None = None) -> list[PhaseRow]:
    """The job's phases with their state and duration, from the job JSON's `phases` times (server clock).

    A phase has started when its stage has (queued starts at dateCreated); it is done when the next has
    started or its own finish is recorded. A failure status marks the phase it belongs to.
    """
    clock = clock or PhaseClock()
    phases = job.get("phases") or {}
    created = _epoch(job.get("dateCreated"))
    finished_at = _epoch(job.get("dateFinished"))
    starts: list[float | None] = []
    ends: list[float | None] = []
    for name, stage in PHASES:
        times = (phases.get(stage) or {}) if stage else {}
        start = created if stage is None else _epoch(times.get("started"))
        starts.append(start if start is not None else clock.seen.get(name))
        ends.append(None if stage is None else _epoch(times.get("finished")))
    for index in range(len(PHASES)):
        later = [s for s in starts[index + 1 :] if s is not None]
        if ends[index] is None and later:
            ends[index] = later[0]
    status = int(job.get("status", 0))
    failed_phase = FAILED_IN.get(status)
    if failed_phase is None and job.get("dateFinished") and failure_of(job):
        failed_phase = "running"
    rows = []
    for index, (name, _stage) in enumerate(PHASES):
        start, end = starts[index], ends[index]
        if start is None:
            state = "skipped" if finished_at is not None else "waiting"
            elapsed = None
        elif end is not None:
            state, elapsed = "done", max(end - start, 0.0)
        elif finished_at is not None:
            state, elapsed = "done", max(finished_at - start, 0.0)
        else:
            state, elapsed = "active", max(now - start, 0.0)
        if name == failed_phase:
            state = "failed"
        rows.append(PhaseRow(name, state, elapsed))
    return rows


ICONS = {
    "waiting": "[dim]·[/]",
    "active": "[cyan]▶[/]",
    "done": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[dim]-[/]",
}


def progress_view(job: dict[str, Any], now: float, clock: PhaseClock) -> Group:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(width=2)
    table.add_column(min_width=13)
    table.add_column(justify="right", min_width=9)
    for row in phase_rows(job, now, clock):
        elapsed = f"{row.elapsed:.1f} s" if row.elapsed is not None else ""
        style = "bold" if row.state == "active" else ("dim" if row.state in ("waiting", "skipped") else "")
        table.add_row(ICONS[row.state], Text(row.name, style=style), elapsed)
    created = _epoch(job.get("dateCreated"))
    total = (_epoch(job.get("dateFinished")) or now) - created if created else 0.0
    header = Text.from_markup(
        f"job [bold]{escape(str(job['jobId']))}[/] · status {job['status']} "
        f"{escape(str(job['statusText']).strip())} · {max(total, 0.0):.1f} s"
    )
    return Group(header, table)


@dataclass
class LiveProgress:
    """Re-rendered by rich's Live at each refresh, so the running phase's clock ticks between polls."""

    job: dict[str, Any]
    clock: PhaseClock

    def __rich__(self) -> Group:
        return progress_view(self.job, time.time(), self.clock)


def follow_job(
    provider: ProviderClient,
    consumer: str,
    job: dict[str, Any],
    *,
    timeout: float,
    console: Console,
    live: bool,
) -> dict[str, Any]:
    """Poll the job until it finishes; a live phase display on a terminal, one line per change elsewhere."""
    clock = PhaseClock()
    deadline = time.monotonic() + timeout

    def polls() -> Iterator[dict[str, Any]]:
        current = job
        while True:
            clock.observe(current, time.time())
            yield current
            if current.get("dateFinished"):
                return
            if time.monotonic() > deadline:
                raise CliError(
                    f"the job {job['jobId']} is still at status {current['status']} after {timeout:.0f} s",
                    f"it keeps running: follow it with `c2d compute status {job['jobId']}`, or stop it with "
                    f"`c2d compute stop {job['jobId']}`",
                )
            time.sleep(POLL_SECONDS)
            current = provider.status(consumer, job["jobId"])[0]

    final = job
    if live:
        view = LiveProgress(job, clock)
        with Live(view, console=console, refresh_per_second=8):
            for current in polls():
                final = view.job = current
        return final
    last_status = None
    started = time.monotonic()
    for current in polls():
        final = current
        if current["status"] != last_status:
            last_status = current["status"]
            console.print(
                f"  {time.monotonic() - started:6.1f} s  status {current['status']:>2} "
                f"{escape(str(current['statusText']).strip())}"
            )
    console.print(progress_view(final, time.time(), clock))
    return final


# --- results --------------------------------------------------------------------------------------


def _job(provider: ProviderClient, consumer: str, job_id: str) -> dict[str, Any]:
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


def _entries(job: dict[str, Any]) -> list[dict[str, Any]]:
    results = job.get("results")
    return [entry for entry in results if isinstance(entry, dict)] if isinstance(results, list) else []


def download(provider: ProviderClient, consumer: LocalAccount, job_id: str, entry: dict[str, Any]) -> bytes:
    """One result, checked against the size (and sha256, when the job lists one) the job reports."""
    from c2d_cli.provider_client import ProviderError

    index = int(entry["index"])
    response = provider.result(consumer, job_id, index)
    if response.status_code != 200:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        raise explain_provider_error(ProviderError(response.status_code, body))
    content = response.content
    if "filesize" in entry and len(content) != int(entry["filesize"]):
        raise CliError(
            f"result {index} ({entry.get('filename')}) arrived with {len(content)} bytes, the job lists "
            f"{entry['filesize']}",
            "download it again; if it persists, tell the Provider's operator",
        )
    if entry.get("sha256") and hashlib.sha256(content).hexdigest() != str(entry["sha256"]).lower():
        raise CliError(
            f"result {index} ({entry.get('filename')}) does not match its sha256", "download it again"
        )
    return content


def safe_name(filename: str, index: int, taken: set[str]) -> str:
    """A plain file name for a result (no folders, no dot names), unique within the download."""
    name = PurePosixPath(str(filename).replace("\\", "/")).name
    if name in ("", ".", "..") or name.startswith("."):
        name = f"result-{index}"
    if name in taken:
        name = f"{index}-{name}"
    taken.add(name)
    return name


def _finished_or_fail(job: dict[str, Any], what: str) -> None:
    if not job.get("dateFinished"):
        raise CliError(
            f"the job {job['jobId']} has not finished (status {job['status']} "
            f"{str(job['statusText']).strip()}): its {what} are published when it ends",
            f"wait for it with `c2d compute logs {job['jobId']} --follow`, or look with "
            f"`c2d compute status {job['jobId']}`",
        )


def log_tail(provider: ProviderClient, consumer: LocalAccount, job: dict[str, Any], lines: int = 15) -> str:
    from c2d_cli.provider_client import ProviderError

    for entry in _entries(job):
        if entry.get("type") == "algorithmLog":
            try:
                text = download(provider, consumer, job["jobId"], entry).decode("utf-8", "replace")
            except (CliError, ProviderError):
                return ""
            return "\n".join(text.rstrip().splitlines()[-lines:])
    return ""


def failure_of(job: dict[str, Any]) -> str | None:
    """Why a finished job failed, or None. Like Ocean Node, a job whose algorithm ran and failed still
    ends at 70 (its logs are published): the termination details tell."""
    termination = job.get("terminationDetails") or {}
    reason = str(termination.get("reason") or "")
    exit_code = termination.get("exitCode")
    algorithm_failed = reason in ALGORITHM_FAILURES or (exit_code not in (None, 0) and reason != "Stopped")
    if int(job["status"]) == FINISHED and not algorithm_failed:
        return None
    if int(job["status"]) == FINISHED:
        detail = job.get("statusDetail") or f"the algorithm ended with {reason or f'exit code {exit_code}'}"
        return f"{detail} (its logs were published)"
    text = f"status {job['status']} {str(job['statusText']).strip()}"
    return text + (f": {job['statusDetail']}" if job.get("statusDetail") else "")


def report_final(
    provider: ProviderClient, consumer: LocalAccount, job: dict[str, Any], console: Console
) -> int:
    """What the consumer needs after a job: its results, or why it failed. Returns the exit code."""
    job_id = job["jobId"]
    failure = failure_of(job)
    if failure is None:
        stopped = " (stopped on request: its outputs so far)" if job.get("stopreq") else ""
        console.print(f"[green]job {job_id} finished[/]{stopped}")
        table = Table(box=None, pad_edge=False)
        for column in ("index", "type", "file", "bytes"):
            table.add_column(column)
        for entry in _entries(job):
            table.add_row(
                str(entry.get("index")),
                str(entry.get("type")),
                str(entry.get("filename")),
                str(entry.get("filesize")),
            )
        console.print(table)
        console.print(f"download them with: c2d compute results {job_id} --out DIR")
        asset = results_asset_text(job)
        if asset:
            console.print(f"results asset: {escape(asset)}")
        return 0
    console.print(f"[red bold]job {job_id} failed[/]: {escape(failure)}")
    tail = log_tail(provider, consumer, job)
    if tail:
        console.print("last lines of the algorithm's log:")
        console.print(Text(tail), style="dim")
    console.print(
        f"the whole log: c2d compute logs {job_id}; every result: c2d compute results {job_id} --out DIR"
    )
    return EXIT_JOB_FAILED


# --- commands -------------------------------------------------------------------------------------


@compute_app.command("start")
def compute_start(
    dataset: Annotated[
        list[str],
        typer.Option(
            "--dataset",
            help="A dataset's DID, or DID#SERVICE_ID (repeatable; the first is the main input).",
        ),
    ],
    algorithm: Annotated[
        str | None, typer.Option("--algorithm", help="A published algorithm's DID (or DID#SERVICE_ID).")
    ] = None,
    raw_algorithm: Annotated[
        Path | None,
        typer.Option("--raw-algorithm", help="Your own code, if every dataset allows raw algorithms."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", help="With --raw-algorithm: IMAGE:TAG, or IMAGE:TAG@sha256:DIGEST."),
    ] = None,
    checksum: Annotated[
        str | None, typer.Option("--checksum", help="With --raw-algorithm: the image digest sha256:….")
    ] = None,
    entrypoint: Annotated[
        str | None,
        typer.Option("--entrypoint", help="With --raw-algorithm: the command, e.g. 'python $ALGO'."),
    ] = None,
    env: Annotated[
        str | None, typer.Option("--env", help="Compute environment id (default: the first).")
    ] = None,
    algocustomdata: Annotated[
        str | None, typer.Option("--algocustomdata", help="A JSON object handed to the algorithm.")
    ] = None,
    publish_output: Annotated[
        bool,
        typer.Option(
            "--publish-output",
            help="Publish the results as a new Ocean asset you own (Ocean's output.publishOutput).",
        ),
    ] = False,
    output_name: Annotated[
        str | None, typer.Option("--output-name", help="With --publish-output: the new asset's name.")
    ] = None,
    output_description: Annotated[
        str | None, typer.Option("--output-description", help="With --publish-output: its description.")
    ] = None,
    output_tag: Annotated[
        list[str] | None, typer.Option("--output-tag", help="With --publish-output: a tag (repeatable).")
    ] = None,
    output_license: Annotated[
        str | None, typer.Option("--output-license", help="With --publish-output: its license.")
    ] = None,
    output_owner: Annotated[
        str | None,
        typer.Option("--output-owner", help="With --publish-output: who owns it (default: your account)."),
    ] = None,
    publish_log: Annotated[
        bool,
        typer.Option(
            "--publish-log", help="With --publish-output: include the algorithm's log in the asset."
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the job to its end and report its results.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait follows the job.")] = 900.0,
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    home: HomeOption = None,
) -> None:
    """Order the datasets and the algorithm, start the job, and with --wait follow it to its results.

    Calls initializeCompute, pays each quoted provider fee with startOrder (or reuseOrder), then sends
    the signed start. Exit code 3 when the job ran and failed.
    """
    from c2d_cli.provider_client import ProviderError

    datasets = [parse_input(value, "dataset") for value in dataset]
    if (algorithm is None) == (raw_algorithm is None):
        raise typer.BadParameter("give one of --algorithm DID or --raw-algorithm FILE")
    if algorithm is not None and (image or checksum or entrypoint):
        raise typer.BadParameter(
            "--image, --checksum and --entrypoint go with --raw-algorithm; a published "
            "algorithm brings its container"
        )
    custom = parse_custom_data(algocustomdata)
    output = output_request(
        publish_output,
        output_name,
        output_description,
        output_tag,
        output_license,
        output_owner,
        publish_log,
    )
    config = load_config(
        err,
        "consumer",
        provider_url=provider_url,
        rpc_url=rpc_url,
        chain_id=chain_id,
        key_file=key_file,
        account=account,
        home=home,
    )
    if raw_algorithm is not None and not (image and entrypoint):
        raise typer.BadParameter("--raw-algorithm needs --image IMAGE:TAG@sha256:DIGEST and --entrypoint")
    say = (lambda _text: None) if json_output else (lambda text: err.print(f"  {escape(text)}"))
    with reported(err, config):
        meta = (
            raw_algorithm_meta(raw_algorithm, image, checksum, entrypoint, config.chain_id)
            if raw_algorithm
            else None
        )
        consumer = config.account()
        chain = config.connect_chain()
        provider = open_provider(config)
        try:
            check_provider_serves(provider, config, chain.chain_id)
            environment = choose_environment(provider.environments(chain.chain_id), env)
            targets = resolve_targets(config, chain, datasets, role="dataset")
            algorithm_target = (
                resolve_targets(config, chain, [parse_input(algorithm, "algorithm")], role="algorithm")[0]
                if algorithm
                else None
            )
            names = {
                "dataset": targets[0].label,
                "algorithm": algorithm_target.label if algorithm_target else "the raw algorithm",
            }
            names.update({f"datasets[{i}]": target.label for i, target in enumerate(targets) if i})
            if not json_output:
                err.print(
                    f"as {consumer.address} ({config.key_description}), environment {environment['id']}:"
                )
            algorithm_ref = (
                {"documentId": algorithm_target.did, "serviceId": algorithm_target.service_id}
                if algorithm_target
                else {"meta": meta}
            )
            try:
                quote = provider.initialize_compute(
                    [{"documentId": t.did, "serviceId": t.service_id} for t in targets],
                    algorithm_ref,
                    str(environment["id"]),
                    chain.block_timestamp() + order_validity(environment),
                    consumer.address,
                )
                say(
                    "initializeCompute: the Provider accepts the inputs and the algorithm and quoted its fees"
                )
                pairs = list(zip(targets, quote["datasets"], strict=True))
                if algorithm_target is not None:
                    pairs.append((algorithm_target, quote["algorithm"]))
                check_can_pay(chain, consumer.address, pairs)
                orders = place_orders(chain, consumer, environment, pairs, say)
                refs = [
                    {"documentId": t.did, "serviceId": t.service_id, "transferTxId": tx}
                    for t, tx in zip(targets, orders, strict=False)
                ]
                algorithm_start: dict[str, Any] = (
                    {**algorithm_ref, "transferTxId": orders[-1]} if algorithm_target else {"meta": meta}
                )
                if custom is not None:
                    algorithm_start["algocustomdata"] = custom
                job = provider.start(
                    consumer, refs[0], algorithm_start, str(environment["id"]), refs[1:], output=output
                )[0]
            except ProviderError as error:
                raise explain_provider_error(error, names) from None
            say(f"started job {job['jobId']} (status {job['status']} {str(job['statusText']).strip()})")
            if not wait:
                if json_output:
                    print_json(job)
                else:
                    out.print(job["jobId"])
                    err.print(f"  follow it: c2d compute status {job['jobId']}  (or start with --wait)")
                return
            try:
                final = follow_job(
                    provider,
                    consumer.address,
                    job,
                    timeout=timeout,
                    console=err if json_output else out,
                    live=out.is_terminal and not json_output,
                )
            except KeyboardInterrupt:
                err.print(
                    f"\nstopped following; the job keeps running. `c2d compute status {job['jobId']}`, "
                    f"or `c2d compute stop {job['jobId']}`"
                )
                raise typer.Exit(130) from None
            if json_output:
                print_json(final)
                code = EXIT_JOB_FAILED if failure_of(final) else 0
            else:
                code = report_final(provider, consumer, final, out)
        finally:
            provider.close()
    if code:
        raise typer.Exit(code)


def _consumer_command(
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


@compute_app.command("status")
def compute_status(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id `compute start` printed.")],
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Show one job: status, phases with their durations, results."""
    config, consumer, provider = _consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            job = _job(provider, consumer.address, job_id)
        finally:
            provider.close()
    if json_output:
        print_json(job)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("job", str(job["jobId"]))
    table.add_row(
        "status",
        f"{job['status']} {str(job['statusText']).strip()}"
        + (" (stop requested)" if job.get("stopreq") else ""),
    )
    if job.get("dateFinished"):
        failure = failure_of(job)
        outcome = "[green]succeeded[/]"
        if failure:
            outcome = f"[red]failed: {escape(failure)}[/]"
        elif job.get("stopreq"):
            outcome = "stopped on request (what it wrote so far is published)"
        table.add_row("outcome", outcome)
    elif job.get("statusDetail"):
        table.add_row("detail", str(job["statusDetail"]))
    created = _epoch(job.get("dateCreated"))
    if created:
        table.add_row("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)))
    table.add_row("algorithm", str(job.get("algoDID")))
    table.add_row("inputs", ", ".join(job.get("inputDID") or []))
    termination = job.get("terminationDetails") or {}
    if termination.get("exitCode") is not None:
        table.add_row("exit code", str(termination["exitCode"]))
    for row in phase_rows(job, time.time()):
        table.add_row(row.name, row.state + (f", {row.elapsed:.1f} s" if row.elapsed is not None else ""))
    asset = results_asset_text(job)
    if asset:
        table.add_row("results asset", asset)
    for entry in _entries(job):
        table.add_row(
            f"result {entry.get('index')}",
            f"{entry.get('filename')} ({entry.get('type')}, {entry.get('filesize')} bytes)",
        )
    out.print(table)


@compute_app.command("logs")
def compute_logs(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for the job to finish first.")] = False,
    log: Annotated[
        str, typer.Option("--log", help="Which log: algorithm, configuration or publish.")
    ] = "algorithm",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --follow waits.")] = 900.0,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Print a job's log (the algorithm's by default). Logs are published when the job ends."""
    if log not in LOG_TYPES:
        raise typer.BadParameter(f"--log {log!r}: choose algorithm, configuration or publish")
    config, consumer, provider = _consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            job = _job(provider, consumer.address, job_id)
            if follow and not job.get("dateFinished"):
                job = follow_job(provider, consumer.address, job, timeout=timeout, console=err, live=False)
            _finished_or_fail(job, "logs")
            entry = next((e for e in _entries(job) if e.get("type") == LOG_TYPES[log]), None)
            if entry is None:
                others = [
                    name for name, kind in LOG_TYPES.items() for e in _entries(job) if e.get("type") == kind
                ]
                raise CliError(
                    f"the job {job_id} published no {log} log "
                    f"({failure_of(job) or 'status ' + str(job['status'])})",
                    f"it has: {', '.join('--log ' + name for name in others)}" if others else "",
                )
            content = download(provider, consumer, job_id, entry)
        finally:
            provider.close()
    sys.stdout.write(content.decode("utf-8", "replace"))
    sys.stdout.flush()


@compute_app.command("results")
def compute_results(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write every result into.")],
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """Download every result of a finished job (outputs and logs), each checked against its listed size."""
    config, consumer, provider = _consumer_command(provider_url, key_file, account, home, chain_id)
    saved = []
    with reported(err, config):
        try:
            job = _job(provider, consumer.address, job_id)
            _finished_or_fail(job, "results")
            entries = _entries(job)
            if not entries:
                raise CliError(f"the job {job_id} has no results (status {job['status']})")
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CliError(f"cannot create {out_dir}: {error.strerror}") from None
            taken: set[str] = set()
            for entry in entries:
                content = download(provider, consumer, job_id, entry)
                path = out_dir / safe_name(str(entry.get("filename", "")), int(entry["index"]), taken)
                partial = path.with_name(f".{path.name}.part")
                partial.write_bytes(content)
                partial.replace(path)
                saved.append(
                    {
                        "index": int(entry["index"]),
                        "type": entry.get("type"),
                        "filename": entry.get("filename"),
                        "path": str(path),
                        "filesize": len(content),
                        "sha256": hashlib.sha256(content).hexdigest(),
                    }
                )
        finally:
            provider.close()
    if json_output:
        print_json(saved)
        return
    table = Table(title=f"results of job {job_id} in {out_dir}", box=None, pad_edge=False)
    for column in ("index", "type", "file", "bytes", "sha256"):
        table.add_column(column, overflow="fold")
    for item in saved:
        name = Path(str(item["path"])).name
        table.add_row(str(item["index"]), str(item["type"]), name, str(item["filesize"]), str(item["sha256"]))
    out.print(table)
    failure = failure_of(job)
    if failure:
        err.print(
            f"[yellow]note:[/] the job failed ({escape(failure)}): these are its logs and what it wrote"
        )


@compute_app.command("stop")
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

    config, consumer, provider = _consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            try:
                job = provider.stop(consumer, job_id)[0]
            except ProviderError as error:
                if error.status == 404:
                    _job(provider, consumer.address, job_id)  # raises the clear "no job" message
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


@compute_app.command("list")
def compute_list(
    json_output: JsonOption = False,
    provider_url: ProviderUrlOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    chain_id: ChainIdOption = None,
    home: HomeOption = None,
) -> None:
    """List your jobs on the Provider, newest first."""
    config, consumer, provider = _consumer_command(provider_url, key_file, account, home, chain_id)
    with reported(err, config):
        try:
            jobs = provider.status(consumer.address)
        finally:
            provider.close()
    jobs.sort(key=lambda job: _epoch(job.get("dateCreated")) or 0.0, reverse=True)
    if json_output:
        print_json(jobs)
        return
    if not jobs:
        out.print(f"no jobs for {consumer.address} on {config.provider_url}")
        return
    table = Table(title=f"jobs of {consumer.address}", box=box.SIMPLE_HEAD)
    for column in ("job", "status", "created", "took", "algorithm"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        created = _epoch(job.get("dateCreated"))
        finished = _epoch(job.get("dateFinished"))
        table.add_row(
            str(job["jobId"]),
            f"{job['status']} {str(job['statusText']).strip()}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "",
            f"{finished - created:.1f} s" if created and finished else "running",
            _short(str(job.get("algoDID"))),
        )
    out.print(table)


def _short(did: str) -> str:
    return did if len(did) < 20 else f"{did[:14]}…{did[-6:]}"
