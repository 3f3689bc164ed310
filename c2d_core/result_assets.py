"""A job's results published as a new Ocean asset the consumer owns (issue 8, Ocean's historical `output`).

The Provider's key creates a data NFT and a datatoken, stores a DDO v4 with one `access` service whose
encrypted files name the job's results by manifest index (`c2dResult`), mints datatokens to the owner and
hands the NFT over; ERC721Template's transfer clears every role the Provider had. This runs in the
engine's run worker, not in a pod: it needs only the manifest (names, sizes, checksums), never a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from c2d_core import engine
from c2d_core.redact import safe_reason
from c2d_core.results import ResultEntry
from c2d_core.workflow import Workflow

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_core.chain import Chain
    from c2d_core.settings import EngineSettings

# Our own file type in the encrypted files document: the Provider's download route serves it from the
# job's manifest, as computeResult does, so no URL or store location is ever written into the DDO.
RESULT_FILE_TYPE = "c2dResult"
# Whole datatokens minted to the owner: enough to order (download) the results a few times at once.
RESULTS_DATATOKENS = 10
RESULTS_SERVICE_ID = "access"
NFT_SYMBOL = "C2D-RESULTS"
DDO_VERSION = "4.1.0"
# Several run workers (processes, or pods) may send with the same Provider key at once; a clash on the
# nonce is refused before anything is mined, so the step is sent again with a fresh nonce after a
# random pause, which spreads the contenders apart (three at once on anvil need up to four tries).
NONCE_ATTEMPTS = 8
NONCE_BACKOFF_MS = 300
MAX_DETAIL = 500

OutcomeStatus = Literal["published", "failed", "skipped"]
T = TypeVar("T")


class ResultsAssetError(Exception):
    """Publishing the results asset cannot go ahead; the message is safe to show to the consumer."""


@dataclass(frozen=True)
class MintedResultsAsset:
    did: str
    nft: str
    datatoken: str
    owner: str
    transactions: int
    seconds: float
    files: tuple[int, ...] = ()  # the manifest indexes the asset serves, in the DDO's file order


@dataclass(frozen=True)
class ResultsAssetOutcome:
    """What the job records about its results asset (hidden tags `.dagster/c2d/results_asset`,
    `.dagster/c2d/results_did` and `.dagster/c2d/results_asset_files`, all in one write)."""

    status: OutcomeStatus
    detail: str
    did: str | None = None
    asset: MintedResultsAsset | None = None

    def tags(self) -> dict[str, str]:
        record = json.dumps({"status": self.status, "detail": self.detail}, separators=(",", ":"))
        tags = {engine.RESULTS_ASSET: record}
        if self.did:
            tags[engine.RESULTS_DID] = self.did
            served = list(self.asset.files) if self.asset else []
            tags[engine.RESULTS_ASSET_FILES] = json.dumps(served, separators=(",", ":"))
        return tags


def served_indexes(tags: Mapping[str, str]) -> frozenset[int]:
    """The result indexes a job's results asset serves (`.dagster/c2d/results_asset_files`); none when
    unset."""
    try:
        raw = json.loads(tags.get(engine.RESULTS_ASSET_FILES, "[]"))
    except json.JSONDecodeError:
        return frozenset()
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(item for item in raw if isinstance(item, int) and not isinstance(item, bool))


def wants_results_asset(workflow: Workflow | None) -> bool:
    return bool(workflow and workflow.output and workflow.output.publish_output)


def skip_reason(
    manifest: Sequence[ResultEntry],
    *,
    stopped: bool,
    algorithm_termination: str | None,
    failure: str = "",
) -> str:
    """Why a finished job's results are not published as an asset ("" when they are).

    An asset's provenance says "these are the outputs of this algorithm on these inputs": outputs of a
    run the consumer stopped, or of an algorithm that crashed or was killed, are partial, so they stay
    downloadable through computeResult but are not published.
    """
    if failure:
        return f"the job ended with status {failure}; nothing was published as an asset"
    if stopped:
        return "the job was stopped on request; its results were not published as an asset"
    if algorithm_termination not in (None, "Completed"):
        return f"the algorithm ended with {algorithm_termination}; its results were not published as an asset"
    if not any(entry.type == "output" for entry in manifest):
        return "the algorithm wrote no outputs; there was nothing to publish as an asset"
    return ""


def results_owner(workflow: Workflow) -> str:
    """Who gets the NFT and the datatokens: the requested owner, else the job's consumer."""
    from web3 import Web3

    requested = workflow.output.owner if workflow.output else None
    return str(Web3.to_checksum_address(requested or workflow.owner))


def iso_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def result_files(
    job_id: str, manifest: Sequence[ResultEntry], *, include_algorithm_log: bool
) -> list[dict[str, Any]]:
    """The asset's file objects: every output, then the algorithm log when asked, by computeResult index."""
    wanted = {"output", "algorithmLog"} if include_algorithm_log else {"output"}
    return [
        {"type": RESULT_FILE_TYPE, "jobId": job_id, "index": entry.index}
        for entry in manifest
        if entry.type in wanted
    ]


def provenance(
    workflow: Workflow,
    manifest: Sequence[ResultEntry],
    *,
    chain_id: int,
    provider_address: str,
    created_at: datetime,
) -> dict[str, Any]:
    """`metadata.additionalInformation.c2dProvenance`: what produced these results, checkable by anyone."""
    algorithm = workflow.algorithm
    container = algorithm.container
    return {
        "jobId": workflow.job_id,
        "inputs": workflow.dids,
        "algorithm": (
            {"did": algorithm.did}
            if algorithm.did
            else {"rawcodeSha256": algorithm.code_sha256 or hashlib.sha256(b"").hexdigest()}
        ),
        "container": {"image": container.image, "tag": container.tag, "checksum": container.checksum},
        # sha256 hex of each output, as computeResult serves it: a download can be checked against it.
        "outputs": [
            {"name": entry.filename, "checksum": entry.sha256 or None, "size": entry.filesize}
            for entry in manifest
            if entry.type == "output"
        ],
        "createdAt": iso_time(created_at),
        "environment": workflow.environment,
        "chainId": chain_id,
        "providerAddress": provider_address,
    }


def results_ddo(
    workflow: Workflow,
    manifest: Sequence[ResultEntry],
    *,
    did: str,
    nft: str,
    datatoken: str,
    chain_id: int,
    provider_url: str,
    provider_address: str,
    encrypted_files: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The DDO v4 of a results asset: dataset metadata with provenance and one access service."""
    output = workflow.output
    if output is None or output.metadata is None:
        raise ResultsAssetError("the job's output object has no metadata")
    requested = output.metadata
    now = iso_time(created_at)
    metadata: dict[str, Any] = {
        "created": now,
        "updated": now,
        "type": "dataset",
        "name": requested.name,
        # Ocean's DDO schema wants a description; an empty one from the request gets a factual default.
        "description": requested.description or f"Results of compute job {workflow.job_id}",
        "tags": list(requested.tags),
        "author": results_owner(workflow),
        "license": requested.license,
        "additionalInformation": {
            "c2dProvenance": provenance(
                workflow,
                manifest,
                chain_id=chain_id,
                provider_address=provider_address,
                created_at=created_at,
            )
        },
    }
    return {
        "@context": ["https://w3id.org/did/v1"],
        "id": did,
        "version": DDO_VERSION,
        "chainId": chain_id,
        "nftAddress": nft,
        "metadata": metadata,
        "services": [
            {
                "id": RESULTS_SERVICE_ID,
                "type": "access",
                "files": encrypted_files,
                "datatokenAddress": datatoken,
                "serviceEndpoint": provider_url,
                "timeout": 0,
            }
        ],
    }


def _nonce_clash(error: Exception) -> bool:
    text = str(error).lower()
    # "nonce too low" / "replacement transaction underpriced": another sender took this nonce. Not
    # "already known": that is our own transaction, already sent, and must not be sent twice.
    return "nonce" in text or "underpriced" in text


def _with_nonce_retry(step: Callable[[], T]) -> T:
    """Run one single-transaction step, again when another sender of this key took its nonce."""
    from c2d_core.chain import TransactionReverted

    for attempt in range(1, NONCE_ATTEMPTS + 1):
        try:
            return step()
        except TransactionReverted:
            raise
        except Exception as error:
            if attempt == NONCE_ATTEMPTS or not _nonce_clash(error):
                raise
            time.sleep((secrets.randbelow(NONCE_BACKOFF_MS) + 1) / 1000)
    raise AssertionError("unreachable")


def mint_results_asset(
    chain: Chain,
    provider: LocalAccount,
    workflow: Workflow,
    manifest: Sequence[ResultEntry],
    provider_url: str,
    *,
    now: datetime | None = None,
    on_step: Callable[[str], None] | None = None,
    on_created: Callable[[str], None] | None = None,
) -> MintedResultsAsset:
    """Create, describe, mint and hand over the results asset; raises on the first failing step.

    Four transactions, all paid by the Provider's key: createNftWithErc20 (the Provider owns the NFT and
    mints), setMetaData, mint to the owner, transferFrom to the owner. The transfer runs the template's
    permission clean-up (ERC725 roles and every datatoken's minters and payment managers), so the
    Provider ends with no role at all. If a step after the creation fails, the unfinished NFT is still
    handed to the owner (best effort), who can then finish or burn it without the Provider.
    `on_created(nft)` runs as soon as the NFT exists, so that a process killed before the hand-over
    (where no `finally` runs) leaves a record from which `finish_handover` completes it.
    """
    from web3 import Web3

    from c2d_core.crypto import encrypt_for, public_key_of
    from c2d_core.ocean.ddo_reader import FLAG_LZMA
    from c2d_core.ocean.dids import did_for
    from c2d_core.publishing import create_asset, mint, set_metadata

    def step(name: str) -> None:
        if on_step is not None:
            on_step(name)

    started = time.perf_counter()
    created_at = now or datetime.now(UTC)
    owner = results_owner(workflow)
    if owner.lower() == provider.address.lower():
        raise ResultsAssetError("the results owner is the Provider's own address; name another owner")
    if not provider_url:
        raise ResultsAssetError("the engine has no Provider URL for the asset's serviceEndpoint")
    output = workflow.output
    if output is None or output.metadata is None:
        raise ResultsAssetError("the job's output object has no metadata")
    nft_name = output.metadata.name[:64]
    files = result_files(workflow.job_id, manifest, include_algorithm_log=output.publish_algorithm_log)
    if not any(entry.type == "output" for entry in manifest):
        raise ResultsAssetError("the algorithm wrote no outputs, so there is nothing to publish")

    receipts = []
    step("createNftWithErc20")
    nft, datatoken = _with_nonce_retry(lambda: create_asset(chain, provider, nft_name, NFT_SYMBOL))
    nft, datatoken = Web3.to_checksum_address(nft), Web3.to_checksum_address(datatoken)
    handed_over = False
    try:
        if on_created is not None:
            on_created(nft)
        did = did_for(nft, chain.chain_id)
        key_hex = "0x" + bytes(provider.key).hex()
        files_document = {"datatokenAddress": datatoken, "nftAddress": nft, "files": files}
        encrypted = encrypt_for(public_key_of(key_hex), json.dumps(files_document).encode("utf-8"))
        ddo = results_ddo(
            workflow,
            manifest,
            did=did,
            nft=nft,
            datatoken=datatoken,
            chain_id=chain.chain_id,
            provider_url=provider_url,
            provider_address=provider.address,
            encrypted_files=encrypted,
            created_at=created_at,
        )
        # Compressed, not encrypted: the DDO holds no secret (the files are ECIES-encrypted on their own),
        # and a plain DDO is indexed by any Aquarius without asking this Provider to decrypt it.
        step("setMetaData")
        receipts.append(
            _with_nonce_retry(
                lambda: set_metadata(
                    chain,
                    provider,
                    nft,
                    ddo,
                    flags=FLAG_LZMA,
                    provider_url=provider_url,
                    provider_address=provider.address,
                )
            )
        )
        step("mint")
        receipts.append(
            _with_nonce_retry(lambda: mint(chain, provider, datatoken, owner, RESULTS_DATATOKENS * 10**18))
        )
        step("transferFrom")
        receipts.append(_transfer_nft(chain, provider, nft, owner))
        handed_over = True
    finally:
        if not handed_over:
            # Best effort: the error being raised is the one the caller reports.
            with contextlib.suppress(Exception):
                _transfer_nft(chain, provider, nft, owner)
    return MintedResultsAsset(
        did=did,
        nft=nft,
        datatoken=datatoken,
        owner=owner,
        transactions=len(receipts) + 1,
        seconds=time.perf_counter() - started,
        files=tuple(int(item["index"]) for item in files),
    )


def finish_handover(settings: EngineSettings, nft: str, owner: str) -> str:
    """Hand a results NFT the Provider still owns over to `owner`; a sentence saying what happened.

    For a publish cut short between creating the NFT and handing it over (its process SIGKILLed or
    OOM-killed, its pod deleted: no `finally` ran), so that the Provider's key keeps no role on it.
    Idempotent (an NFT already the owner's, or anyone else's, is left alone) and never raises.
    """
    from web3 import Web3

    from c2d_core.chain import Chain

    try:
        nft, owner = Web3.to_checksum_address(nft), Web3.to_checksum_address(owner)
        provider = _provider_account(settings)
        chain = Chain.connect(settings.chain_rpc_url, settings.addresses_file, settings.chain_id)
        holder = str(chain.contracts.at("ERC721Template", nft).functions.ownerOf(1).call())
        if holder.lower() == owner.lower():
            return f"the NFT {nft} is already owned by {owner}"
        if holder.lower() != provider.address.lower():
            return f"the NFT {nft} is owned by {holder}, not by the Provider: it was left alone"
        _transfer_nft(chain, provider, nft, owner)
    except Exception as error:  # the caller records the sentence; nothing is left to retry here
        return f"handing the NFT {nft} over to {owner} failed: {_safe_reason(error)}"[:MAX_DETAIL]
    return f"the NFT {nft} was handed over to {owner}"


def _provider_account(settings: EngineSettings) -> LocalAccount:
    from eth_account import Account

    key_file = settings.resolved_provider_key_file
    if not key_file.is_file():
        raise ResultsAssetError("the provider key file is missing")
    return Account.from_key(key_file.read_text().strip())


def _transfer_nft(chain: Chain, provider: LocalAccount, nft: str, owner: str) -> Any:
    contract = chain.contracts.at("ERC721Template", nft)
    return _with_nonce_retry(
        lambda: chain.send(provider, contract.functions.transferFrom(provider.address, owner, 1))
    )


def _safe_reason(error: BaseException) -> str:
    """Why a step failed, without URLs or keys: our sentence for known errors, else the error's type."""
    from c2d_core.chain import ChainError

    # Our own errors and the chain helpers' (a revert's EVM reason, an unreachable or misconfigured
    # chain) are sentences; an RPC URL in them may carry an API key, so URLs are cut out.
    return safe_reason(error, (ResultsAssetError, ChainError))


def mint_for_job(
    settings: EngineSettings,
    workflow: Workflow,
    manifest: Sequence[ResultEntry],
    *,
    skip_reason: str = "",
    on_created: Callable[[str], None] | None = None,
) -> ResultsAssetOutcome:
    """Publish a finished job's results asset with the engine's settings; never raises.

    A failure (no chain settings, chain down, a revert) is an outcome with a sentence saying why: the
    job itself has finished and its results stay downloadable through computeResult.
    """
    from c2d_core.chain import Chain

    if skip_reason:
        return ResultsAssetOutcome("skipped", skip_reason[:MAX_DETAIL])
    missing = [
        name
        for name, value in (
            ("C2D_CHAIN_RPC_URL", settings.chain_rpc_url),
            ("C2D_ADDRESSES_FILE", settings.addresses_file),
            ("C2D_PROVIDER_URL", settings.provider_url),
        )
        if not value
    ]
    if missing:
        return ResultsAssetOutcome(
            "failed", f"the engine is not configured to publish assets: set {', '.join(missing)}"
        )
    if (
        workflow.chain_id is not None
        and settings.chain_id is not None
        and workflow.chain_id != settings.chain_id
    ):
        return ResultsAssetOutcome(
            "failed",
            f"the job was ordered on chain {workflow.chain_id}, the engine publishes on {settings.chain_id}",
        )
    stage = "reading the provider key"
    try:
        provider = _provider_account(settings)
        stage = "connecting to the chain"
        chain = Chain.connect(settings.chain_rpc_url, settings.addresses_file, settings.chain_id)
        if workflow.chain_id is not None and chain.chain_id != workflow.chain_id:
            raise ResultsAssetError(
                f"the engine's chain has id {chain.chain_id}, the job's is {workflow.chain_id}"
            )

        def at(name: str) -> None:
            nonlocal stage
            stage = name

        asset = mint_results_asset(
            chain, provider, workflow, manifest, settings.provider_url, on_step=at, on_created=on_created
        )
    except Exception as error:  # every failure becomes the recorded outcome
        detail = f"publishing the results asset failed at {stage}: {_safe_reason(error)}"
        return ResultsAssetOutcome("failed", detail[:MAX_DETAIL])
    return ResultsAssetOutcome(
        "published",
        f"published as {asset.did} (NFT {asset.nft}, datatoken {asset.datatoken}) owned by {asset.owner}",
        did=asset.did,
        asset=asset,
    )
