"""The consumer's side of Compute-to-Data, once: what `c2d compute`, the demo, the benches and the tests run.

initializeCompute → one order per input (`startOrder`, or `reuseOrder` when the Provider names a valid
order that needs a new fee; the fee token's allowance set first) → the signed start → status polls →
the results, each saved under a plain name in the chosen folder after its size and checksum are checked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from c2d_cli.cli_output import CliError, explain_provider_error

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient
    from c2d_core.chain import Chain

T = TypeVar("T")

# Orders (and so the provider fees, priced per minute) cover the environment's longest job plus this
# much time to wait for a slot.
QUEUE_ALLOWANCE = 600
# A quote must stay valid at least this long after it is checked: the orders are mined and the start
# request checked within it.
ORDER_MARGIN = 120
POLL_SECONDS = 0.5

Clock = Callable[[], float]
Sleeper = Callable[[float], None]
Say = Callable[[str], None]


class Service(Protocol):
    """An asset's service to order: a `Target`, or a `c2d_cli.publisher.PublishedAsset`."""

    @property
    def did(self) -> str: ...

    @property
    def service_id(self) -> str: ...

    @property
    def service_index(self) -> int: ...


@dataclass(frozen=True)
class Target:
    """One thing to order: a dataset (or the published algorithm), its service and where it sits."""

    did: str
    service_id: str
    service_index: int
    label: str  # "the dataset did:op:…", for messages

    @classmethod
    def of(cls, service: Service, role: str) -> Target:
        return cls(service.did, service.service_id, service.service_index, f"the {role} {service.did}")

    def reference(self) -> dict[str, Any]:
        """How Ocean's requests name it: `{documentId, serviceId}`."""
        return {"documentId": self.did, "serviceId": self.service_id}


Quoted = tuple[Target, dict[str, Any]]  # an input and the Provider's initializeCompute answer for it


# --- ordering -------------------------------------------------------------------------------------


def order_validity(env: dict[str, Any]) -> int:
    """Seconds the orders stay valid: as long as a job may run in `env`, plus the queue allowance."""
    try:
        longest = int(env.get("maxJobDuration") or 0)
    except (TypeError, ValueError):
        longest = 0
    return (longest or 3600) + QUEUE_ALLOWANCE


def quote_time(chain: Chain, clock: Clock = time.time) -> int:
    """The time quotes are asked and judged from: the later of wall-clock and chain time.

    An idle chain's latest block lags wall time (anvil mines only when sent a transaction), but the
    orders are mined at about wall time: a validUntil counted from chain time alone can have passed by
    then. The Provider judges validity on the same basis (provider_api.fees.ProviderFees.now).
    """
    return max(int(clock()), chain.block_timestamp())


def initialize(
    provider: ProviderClient,
    chain: Chain,
    consumer: str,
    env: dict[str, Any],
    datasets: Sequence[Target],
    algorithm: Target | None,
    *,
    meta: dict[str, Any] | None = None,
    valid_for: int | None = None,
    clock: Clock = time.time,
) -> list[Quoted]:
    """`initializeCompute` for the inputs (a published algorithm, or raw `meta`); each with its quote."""
    quote = provider.initialize_compute(
        [target.reference() for target in datasets],
        algorithm.reference() if algorithm else {"meta": meta},
        str(env["id"]),
        quote_time(chain, clock) + (valid_for if valid_for is not None else order_validity(env)),
        consumer,
    )
    quoted = list(zip(datasets, quote["datasets"], strict=True))
    if algorithm is not None:
        quoted.append((algorithm, quote["algorithm"]))
    return quoted


def check_quotes(chain: Chain, env: dict[str, Any], quoted: list[Quoted], clock: Clock = time.time) -> None:
    """Before any transaction: every provider fee is for this environment and still valid long enough
    for its order to be mined and the job started (judged as the Provider judges it, `quote_time`)."""
    import json

    now = quote_time(chain, clock)
    for target, answer in quoted:
        fee = answer.get("providerFee")
        if not isinstance(fee, dict):
            continue
        valid_until = int(fee.get("validUntil") or 0)
        if valid_until and valid_until < now + ORDER_MARGIN:
            state = "has expired" if valid_until <= now else f"expires in {valid_until - now} s"
            raise CliError(
                f"the Provider's fee for {target.label} {state} (validUntil {valid_until}; now is {now}, "
                f"the later of this machine's clock and the chain's latest block)",
                "nothing was paid; run the command again for a fresh quote, and check this machine's clock "
                "if it persists",
            )
        try:
            data = json.loads(bytes.fromhex(str(fee.get("providerData", "")).removeprefix("0x")))
        except ValueError:
            data = None
        quoted_env = data.get("environment") if isinstance(data, dict) else None
        if quoted_env is not None and quoted_env != env["id"]:
            raise CliError(
                f"the Provider quoted the fee for {target.label} in the environment {quoted_env!r}, "
                f"not {env['id']!r}",
                "nothing was paid; run the command again, choosing the environment with --env (`c2d envs`)",
            )


def check_inputs_reachable(provider: ProviderClient, datasets: Sequence[Target]) -> None:
    """Before any transaction: the Provider can reach every file of every dataset (its `fileinfo` by
    DID and service). A job on a file it cannot fetch would fail at 31 after the orders were paid."""
    from c2d_cli.provider_client import ProviderError

    for target in datasets:
        try:
            infos = provider.fileinfo({"did": target.did, "serviceId": target.service_id})
        except ProviderError as error:
            if error.status == 404 or error.status >= 500:
                raise explain_provider_error(error, {"dataset": target.label}) from None
            # A Provider that does not answer fileinfo by DID: the start's own checks still apply.
            return
        unreachable = [
            f"file {index}: {info.get('error') or 'unreachable'}"
            for index, info in enumerate(infos)
            if not info.get("valid")
        ]
        if unreachable or not infos:
            raise CliError(
                f"the Provider cannot reach the data of {target.label} now "
                f"({'; '.join(unreachable) or 'it lists no files'}); a job would fail fetching it",
                "nothing was paid; ask the dataset's publisher to serve its files again (on the embedded "
                "stack, the demo's data is served by the stack's origin: `c2d dev up` restarts it)",
            )


def _erc20(chain: Chain, address: str) -> Any:
    return chain.contracts.at("ERC20Template", address)


def check_can_pay(chain: Chain, consumer: str, quoted: list[Quoted]) -> None:
    """Before any transaction: gas money, one datatoken per new order, and the provider fees' tokens.

    Checked for every input first, so a missing token never leaves some datatokens spent and no job.
    """
    from web3 import Web3

    from c2d_core.fees import ONE_TOKEN as DT  # one datatoken: what each new order spends

    paying = any("providerFee" in answer for _, answer in quoted)
    if paying and chain.w3.eth.get_balance(Web3.to_checksum_address(consumer)) == 0:
        raise CliError(
            f"the account {consumer} has no native coin to pay for the order transactions' gas",
            "fund it, or pick another account (--key-file, C2D_PRIVATE_KEY; --account on the local chain)",
        )
    fees: dict[str, int] = {}
    for target, answer in quoted:
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
    chain: Chain, consumer: LocalAccount, env: dict[str, Any], quoted: list[Quoted], say: Say
) -> list[str]:
    """One order transaction id per input, in order: reused as is, reused with a new fee, or new.

    A non-zero provider fee is pulled from the consumer by the datatoken contract, so the datatoken
    must be allowed to spend that much of the fee token first (else the order reverts).
    """
    from c2d_core.fees import ProviderFee, approve, reuse_order, start_order

    orders = []
    for target, answer in quoted:
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


def start_job(
    provider: ProviderClient,
    consumer: LocalAccount,
    env: dict[str, Any],
    datasets: Sequence[Target],
    algorithm: Target | None,
    orders: list[str],
    *,
    meta: dict[str, Any] | None = None,
    algocustomdata: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The signed `POST compute` with the orders `place_orders` made; the new job's JSON."""
    refs = [{**target.reference(), "transferTxId": tx} for target, tx in zip(datasets, orders, strict=False)]
    algorithm_start: dict[str, Any] = (
        {**algorithm.reference(), "transferTxId": orders[-1]} if algorithm else {"meta": meta}
    )
    if algocustomdata is not None:
        algorithm_start["algocustomdata"] = algocustomdata
    return provider.start(consumer, refs[0], algorithm_start, str(env["id"]), refs[1:], output=output)[0]


def order_and_start(
    chain: Chain,
    consumer: LocalAccount,
    provider: ProviderClient,
    dataset: Service,
    algorithm: Service,
    env: dict[str, Any],
    *,
    valid_for: int | None = None,
    algocustomdata: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
    say: Say = lambda _text: None,
    clock: Clock = time.time,
) -> dict[str, Any]:
    """The whole start for one dataset and a published algorithm, as `c2d compute start` runs it."""
    datasets = [Target.of(dataset, "dataset")]
    algorithm_target = Target.of(algorithm, "algorithm")
    quoted = initialize(
        provider, chain, consumer.address, env, datasets, algorithm_target, valid_for=valid_for, clock=clock
    )
    check_quotes(chain, env, quoted, clock)
    check_inputs_reachable(provider, datasets)
    check_can_pay(chain, consumer.address, quoted)
    orders = place_orders(chain, consumer, env, quoted, say)
    return start_job(
        provider,
        consumer,
        env,
        datasets,
        algorithm_target,
        orders,
        algocustomdata=algocustomdata,
        output=output,
    )


# --- following a job ------------------------------------------------------------------------------


class PollTimeout(TimeoutError):
    """The condition did not hold within the timeout; `last` is the last value read."""

    def __init__(self, message: str, last: Any) -> None:
        super().__init__(message)
        self.last = last


def poll_until(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = POLL_SECONDS,
    on_poll: Callable[[T], None] | None = None,
    describe: Callable[[T], str] = lambda value: f"still {value!r}",
    clock: Clock = time.monotonic,
    sleep: Sleeper = time.sleep,
) -> T:
    """Read until `done` holds (the last read is returned); `PollTimeout` once `timeout` seconds passed.

    The clock and the sleeper are parameters so a caller's timeout can be tested without waiting.
    """
    deadline = clock() + timeout
    while True:
        current = read()
        if on_poll is not None:
            on_poll(current)
        if done(current):
            return current
        if clock() > deadline:
            raise PollTimeout(f"{describe(current)} after {timeout:.0f} s", current)
        sleep(interval)


def finished(job: dict[str, Any]) -> bool:
    """Ocean's "nothing more will happen to this job": `dateFinished` is set."""
    return bool(job.get("dateFinished"))


def wait_for_status(
    provider: ProviderClient,
    consumer: str,
    job_id: str,
    *,
    until: Callable[[dict[str, Any]], bool] = finished,
    timeout: float = 180.0,
    interval: float = POLL_SECONDS,
    job: dict[str, Any] | None = None,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    on_change: Callable[[dict[str, Any]], None] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleeper = time.sleep,
) -> dict[str, Any]:
    """Poll the job's status until `until` holds (by default: it finished); returns its last JSON.

    `job` is a status already in hand (the start's answer), used as the first read. `on_poll` sees
    every read, `on_change` each new status code. `PollTimeout` carries the last job JSON.
    """
    pending = [job] if job is not None else []
    last_status: list[Any] = []

    def read() -> dict[str, Any]:
        return pending.pop() if pending else provider.status(consumer, job_id)[0]

    def observe(current: dict[str, Any]) -> None:
        if on_poll is not None:
            on_poll(current)
        if on_change is not None and last_status[-1:] != [current["status"]]:
            last_status[:] = [current["status"]]
            on_change(current)

    return poll_until(
        read,
        until,
        timeout=timeout,
        interval=interval,
        on_poll=observe,
        describe=lambda current: f"job {job_id} still at status {current['status']}",
        clock=clock,
        sleep=sleep,
    )


def stop_job(provider: ProviderClient, consumer: LocalAccount, job_id: str) -> dict[str, Any]:
    """The signed stop; the job's JSON after it (already finished jobs come back unchanged)."""
    return provider.stop(consumer, job_id)[0]


# --- results --------------------------------------------------------------------------------------


def result_entries(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's results list (outputs and logs), without anything that is not an entry."""
    results = job.get("results")
    return [entry for entry in results if isinstance(entry, dict)] if isinstance(results, list) else []


def download(provider: ProviderClient, consumer: LocalAccount, job_id: str, entry: dict[str, Any]) -> bytes:
    """One result, checked against the size (and sha256, when the job lists one) the job reports."""
    # Imported here: eth_account takes a second to import, and `c2d --help` should not wait for it.
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
    """A plain file name for a result (no folders, no dot names, no NUL), unique within the download.

    The name comes from the Provider: it never chooses where a file lands outside the folder.
    """
    name = PurePosixPath(str(filename).replace("\\", "/")).name
    if name in ("", ".", "..") or name.startswith(".") or "\x00" in name:
        name = f"result-{index}"
    if name in taken:
        name = f"{index}-{name}"
    taken.add(name)
    return name


@dataclass(frozen=True)
class SavedResult:
    index: int
    type: Any
    filename: Any  # as the job lists it; `path` has the name it was saved under
    path: Path
    filesize: int
    sha256: str


def download_results(
    provider: ProviderClient,
    consumer: LocalAccount,
    job: dict[str, Any],
    out_dir: Path,
    entries: list[dict[str, Any]] | None = None,
) -> list[SavedResult]:
    """Download every result (or `entries`) into `out_dir`, each checked, written whole or not at all."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create {out_dir}: {error.strerror}") from None
    taken: set[str] = set()
    saved = []
    for entry in result_entries(job) if entries is None else entries:
        content = download(provider, consumer, str(job["jobId"]), entry)
        path = out_dir / safe_name(str(entry.get("filename", "")), int(entry["index"]), taken)
        partial = path.with_name(f".{path.name}.part")
        partial.write_bytes(content)
        partial.replace(path)
        saved.append(
            SavedResult(
                index=int(entry["index"]),
                type=entry.get("type"),
                filename=entry.get("filename"),
                path=path,
                filesize=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
        )
    return saved
