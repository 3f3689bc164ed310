"""Results published as a new Ocean asset (issue 8), on a real anvil with the Ocean contracts.

The asset ends up owned by the requested owner with datatokens to order it, the Provider's key keeps no
role on chain, the DDO resolves with its provenance, and its encrypted files name the job's results by
computeResult index. Failures are recorded outcomes, never exceptions; the engine wiring is exercised
through compute_job in process (the real sandbox), on a live chain and on an unreachable one.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from engine_kit import (
    dataset_input,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    serve_origin,
)
from eth_account import Account
from fixtures_chain import DT, ChainAsset, DevChain

from c2d_cli.origin import LocalOrigin
from c2d_core import engine
from c2d_core.crypto import decrypt_service_files
from c2d_core.ocean.ddo_reader import read_metadata_events
from c2d_core.publishing import create_asset, ecies_decryptor
from c2d_core.result_assets import (
    NFT_SYMBOL,
    RESULT_FILE_TYPE,
    RESULTS_DATATOKENS,
    finish_handover,
    mint_for_job,
    mint_results_asset,
    served_indexes,
    skip_reason,
)
from c2d_core.results import ResultEntry
from c2d_core.settings import EngineSettings
from c2d_core.workflow import Workflow
from provider_api.assets import ChainDdoResolver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

JOB_ID = "ab" * 16
PROVIDER_URL = "http://127.0.0.1:8030"
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "c" * 64,
}
STORE_LOCATION_MARK = "secret-bucket-prefix"


def _entry(index: int, name: str, kind: str, content: bytes) -> ResultEntry:
    return ResultEntry(
        index=index,
        filename=name,
        filesize=len(content),
        type=kind,  # type: ignore[arg-type]
        sha256=hashlib.sha256(content).hexdigest(),
        location=f"{STORE_LOCATION_MARK}/{JOB_ID}/{name}",
    )


MANIFEST = [
    _entry(0, "model.bin", "output", b"weights"),
    _entry(1, "metrics.json", "output", b'{"auc": 0.9}'),
    _entry(2, "algorithm.log", "algorithmLog", b"trained\n"),
    _entry(3, "configure.log", "configurationLog", b"fetched\n"),
    _entry(4, "publish.log", "publishLog", b"uploaded\n"),
]


def _workflow(assets: tuple[ChainAsset, ChainAsset], consumer: str, **output: object) -> Workflow:
    dataset, algorithm = assets
    return Workflow.model_validate(
        {
            "jobId": JOB_ID,
            "owner": consumer,
            "environment": "ocean-compute",
            "chainId": 8996,
            "inputs": [{"did": dataset.did, "serviceId": "compute", "files": {"encryptedFiles": "0xabcd"}}],
            "algorithm": output.pop("algorithm", None)
            or {
                "did": algorithm.did,
                "serviceId": "access",
                "files": {"encryptedFiles": "0xabcd"},
                "container": CONTAINER,
            },
            "output": {"publishOutput": True, "metadata": {"name": "Trained model"}, **output},
        }
    )


def _roles(dev: DevChain, nft: str, datatoken: str, who: str) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    nft_contract = dev.chain.contracts.at("ERC721Template", nft)
    dt_contract = dev.chain.contracts.at("ERC20Template", datatoken)
    return tuple(nft_contract.functions.getPermissions(who).call()), tuple(
        dt_contract.functions.getPermissions(who).call()
    )


def _gas_of(dev: DevChain, sender: str, first_block: int) -> tuple[int, int]:
    """(transactions, gas used) that `sender` sent from `first_block` on."""
    w3 = dev.chain.w3
    count = gas = 0
    for number in range(first_block, int(w3.eth.block_number) + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if str(tx["from"]).lower() == sender.lower():
                count += 1
                gas += int(w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"])
    return count, gas


def test_results_asset_is_the_owners_and_the_provider_keeps_no_role(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev = evm_snapshot
    owner = dev.other_consumer.address  # an owner other than the consumer, as the request may name
    workflow = _workflow(
        chain_assets,
        dev.consumer.address,
        owner=owner,
        publishAlgorithmLog=True,
        metadata={"name": "Trained model", "description": "a model", "tags": ["ml"], "license": "CC-BY"},
    )
    first_block = int(dev.chain.w3.eth.block_number) + 1
    created_at = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC)
    started = time.perf_counter()
    created: list[str] = []
    asset = mint_results_asset(
        dev.chain, dev.provider, workflow, MANIFEST, PROVIDER_URL, now=created_at, on_created=created.append
    )
    seconds = time.perf_counter() - started
    # The NFT was reported as soon as it existed (the watchdog's handle on a publish cut short).
    assert created == [asset.nft]
    assert asset.files == (0, 1, 2)  # both outputs and the algorithm log, by manifest index
    transactions, gas = _gas_of(dev, dev.provider.address, first_block)
    print(f"results asset: {transactions} transactions, {gas} gas, {seconds:.2f} s")
    assert transactions == asset.transactions == 4 and gas < 10_000_000

    chain = dev.chain
    nft = chain.contracts.at("ERC721Template", asset.nft)
    datatoken = chain.contracts.at("ERC20Template", asset.datatoken)
    assert asset.owner == owner and nft.functions.ownerOf(1).call() == owner
    assert datatoken.functions.balanceOf(owner).call() == RESULTS_DATATOKENS * DT
    # The Provider paid for everything and holds nothing: no ERC725 role, no datatoken role, no tokens.
    assert _roles(dev, asset.nft, asset.datatoken, dev.provider.address) == ((False,) * 4, (False, False))
    assert not datatoken.functions.isMinter(dev.provider.address).call()
    assert not nft.functions.isERC20Deployer(dev.provider.address).call()
    assert datatoken.functions.balanceOf(dev.provider.address).call() == 0
    assert datatoken.functions.getPaymentCollector().call() == owner
    assert datatoken.functions.getPublishingMarketFee().call()[0] != dev.provider.address
    # The owner can manage the NFT (every ERC725 role) and, as its ERC20 deployer, add minters.
    assert _roles(dev, asset.nft, asset.datatoken, owner)[0] == (True,) * 4
    assert datatoken.functions.isERC20Deployer(owner).call()

    resolved = ChainDdoResolver(chain, ecies_decryptor(dev.provider_key)).resolve(asset.did)
    assert resolved is not None and resolved.nft_address == asset.nft and resolved.state == 0
    ddo = resolved.ddo
    assert ddo["id"] == asset.did and ddo["nft"]["owner"] == owner and ddo["version"] == "4.1.0"
    metadata = ddo["metadata"]
    assert (metadata["type"], metadata["name"], metadata["description"]) == (
        "dataset",
        "Trained model",
        "a model",
    )
    assert (metadata["tags"], metadata["license"], metadata["author"]) == (["ml"], "CC-BY", owner)
    assert metadata["created"] == metadata["updated"] == "2026-11-25T03:00:00Z"
    assert metadata["additionalInformation"]["c2dProvenance"] == {
        "jobId": JOB_ID,
        "inputs": [chain_assets[0].did],
        "algorithm": {"did": chain_assets[1].did},
        "container": {"image": "python", "tag": "3.11-slim", "checksum": CONTAINER["checksum"]},
        "outputs": [
            {"name": "model.bin", "checksum": hashlib.sha256(b"weights").hexdigest(), "size": 7},
            {"name": "metrics.json", "checksum": hashlib.sha256(b'{"auc": 0.9}').hexdigest(), "size": 12},
        ],
        "createdAt": "2026-11-25T03:00:00Z",
        "environment": "ocean-compute",
        "chainId": 8996,
        "providerAddress": dev.provider.address,
    }
    (service,) = ddo["services"]
    assert service["type"] == "access" and service["timeout"] == 0
    assert service["datatokenAddress"] == asset.datatoken and service["serviceEndpoint"] == PROVIDER_URL
    # The files decrypt only with the Provider's key, to our own file type naming manifest indexes.
    files = decrypt_service_files(
        dev.provider_key,
        service["files"],
        expected_nft_address=asset.nft,
        expected_datatoken_address=asset.datatoken,
    )
    assert files == [
        {"type": RESULT_FILE_TYPE, "jobId": JOB_ID, "index": 0},
        {"type": RESULT_FILE_TYPE, "jobId": JOB_ID, "index": 1},
        {"type": RESULT_FILE_TYPE, "jobId": JOB_ID, "index": 2},
    ]
    # No store location and no URL but the Provider's endpoint (and the DID context) in the DDO.
    text = json.dumps(ddo)
    assert STORE_LOCATION_MARK not in text and "model.bin" in text
    assert text.count("://") == 2 and text.count(PROVIDER_URL) == 1
    # The DDO on chain is plain (lzma) so any indexer reads it; the decryptor named is this Provider.
    (event,) = read_metadata_events(chain, asset.nft)
    assert event.flags == 1 and event.decryptor_url == PROVIDER_URL


def test_owner_defaults_to_the_consumer_raw_algorithm_by_checksum_log_left_out(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev = evm_snapshot
    rawcode = "print('hello')"
    algorithm = {"rawcode": rawcode, "container": CONTAINER}
    workflow = _workflow(chain_assets, dev.consumer.address, algorithm=algorithm)
    asset = mint_results_asset(dev.chain, dev.provider, workflow, MANIFEST, PROVIDER_URL)
    assert asset.owner == dev.consumer.address
    assert dev.chain.contracts.at("ERC721Template", asset.nft).functions.ownerOf(1).call() == asset.owner
    resolved = ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key)).resolve(asset.did)
    assert resolved is not None
    provenance = resolved.ddo["metadata"]["additionalInformation"]["c2dProvenance"]
    assert provenance["algorithm"] == {"rawcodeSha256": hashlib.sha256(rawcode.encode()).hexdigest()}
    assert resolved.ddo["metadata"]["description"] == f"Results of compute job {JOB_ID}"
    files = decrypt_service_files(dev.provider_key, resolved.ddo["services"][0]["files"])
    assert [item["index"] for item in files] == [0, 1]  # outputs only: the log was not asked for


def _settings(tmp_path: Path, dev: DevChain, key: str | None = None, **overrides: object) -> EngineSettings:
    key_file = tmp_path / "provider-key"
    key_file.write_text(key or dev.provider_key)
    values: dict[str, object] = {
        "home": tmp_path,
        "provider_key_file": key_file,
        "chain_rpc_url": dev.rpc_url,
        "chain_id": 8996,
        "addresses_file": dev.addresses_file,
        "provider_url": PROVIDER_URL,
        **overrides,
    }
    return EngineSettings(**values)  # type: ignore[arg-type]


def test_minting_for_a_job_records_failures_without_raising(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset], tmp_path: Path
) -> None:
    dev = evm_snapshot
    workflow = _workflow(chain_assets, dev.consumer.address)

    outcome = mint_for_job(
        _settings(tmp_path, dev, chain_rpc_url="http://127.0.0.1:9/rpc"), workflow, MANIFEST
    )
    assert outcome.status == "failed" and outcome.did is None
    assert outcome.detail.startswith("publishing the results asset failed at connecting to the chain")
    assert "127.0.0.1:9" not in outcome.detail and "://" not in outcome.detail
    assert json.loads(outcome.tags()[engine.RESULTS_ASSET]) == {
        "status": "failed",
        "detail": outcome.detail,
    }
    assert engine.RESULTS_DID not in outcome.tags() and engine.RESULTS_ASSET_FILES not in outcome.tags()

    outcome = mint_for_job(_settings(tmp_path, dev, chain_rpc_url="", provider_url=""), workflow, MANIFEST)
    assert outcome.status == "failed"
    assert outcome.detail == (
        "the engine is not configured to publish assets: set C2D_CHAIN_RPC_URL, C2D_PROVIDER_URL"
    )

    # A Provider wallet without gas money: refused at the first transaction, nothing published.
    unfunded = "0x" + bytes(Account.create().key).hex()
    outcome = mint_for_job(_settings(tmp_path, dev, key=unfunded), workflow, MANIFEST)
    assert outcome.status == "failed"
    assert outcome.detail.startswith("publishing the results asset failed at createNftWithErc20:")
    assert unfunded[2:] not in outcome.detail

    owned_by_provider = _workflow(chain_assets, dev.consumer.address, owner=dev.provider.address)
    outcome = mint_for_job(_settings(tmp_path, dev), owned_by_provider, MANIFEST)
    assert outcome.status == "failed" and "the Provider's own address" in outcome.detail

    other_chain = workflow.model_copy(update={"chain_id": 1})
    outcome = mint_for_job(_settings(tmp_path, dev), other_chain, MANIFEST)
    assert outcome.status == "failed" and "ordered on chain 1" in outcome.detail

    outcome = mint_for_job(_settings(tmp_path, dev), workflow, MANIFEST)
    assert (
        outcome.status == "published"
        and outcome.did
        and outcome.detail.startswith(f"published as {outcome.did}")
    )
    assert outcome.tags()[engine.RESULTS_DID] == outcome.did
    # The indexes the asset serves are recorded with its DID: the outputs, not the log (not asked for).
    assert served_indexes(outcome.tags()) == {0, 1}
    assert json.loads(outcome.tags()[engine.RESULTS_ASSET_FILES]) == [0, 1]


def test_a_publish_cut_short_after_creating_the_nft_is_handed_over_later(
    evm_snapshot: DevChain, tmp_path: Path
) -> None:
    """A worker SIGKILLed between createNftWithErc20 and the hand-over runs no `finally`: the NFT stays
    the Provider's until finish_handover (the stage watchdog's salvage) gives it to the owner."""
    dev = evm_snapshot
    owner = dev.other_consumer.address
    # What the publish's first transaction leaves behind, and nothing after it.
    nft, datatoken = create_asset(dev.chain, dev.provider, "Trained model", NFT_SYMBOL)
    contract = dev.chain.contracts.at("ERC721Template", nft)
    minter = dev.chain.contracts.at("ERC20Template", datatoken).functions.isMinter
    assert contract.functions.ownerOf(1).call() == dev.provider.address
    assert minter(dev.provider.address).call()

    settings = _settings(tmp_path, dev)
    assert finish_handover(settings, nft, owner) == f"the NFT {nft} was handed over to {owner}"
    assert contract.functions.ownerOf(1).call() == owner
    assert _roles(dev, nft, datatoken, dev.provider.address) == ((False,) * 4, (False, False))
    assert not minter(dev.provider.address).call()
    assert _roles(dev, nft, datatoken, owner)[0] == (True,) * 4

    # Idempotent: again, nothing is sent and the NFT stays the owner's.
    block = dev.chain.w3.eth.block_number
    assert finish_handover(settings, nft, owner) == f"the NFT {nft} is already owned by {owner}"
    assert dev.chain.w3.eth.block_number == block
    # An NFT someone else holds now is not the Provider's to move.
    third = dev.consumer.address
    assert finish_handover(settings, nft, third).endswith("not by the Provider: it was left alone")
    assert contract.functions.ownerOf(1).call() == owner
    # Never raises: a chain that cannot be reached is a sentence, without the RPC URL.
    down = finish_handover(_settings(tmp_path, dev, chain_rpc_url="http://127.0.0.1:9/rpc"), nft, owner)
    assert down.startswith(f"handing the NFT {nft} over to {owner} failed:") and "127.0.0.1:9" not in down


def test_the_salvage_hands_over_an_nft_its_dead_run_recorded(
    engine_home: Path, evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    """The salvage step on a run that recorded `c2d/results_nft` and no DID: the owner gets the NFT and
    the job's results asset is a clear failure."""
    from c2d_defs.ops.compute import finish_results_handover
    from c2d_defs.ops.recorder import JobRecorder

    dev = evm_snapshot
    workflow = _workflow(chain_assets, dev.consumer.address)
    nft, _datatoken = create_asset(dev.chain, dev.provider, "Trained model", NFT_SYMBOL)
    config = engine.run_config(workflow.model_dump(by_alias=True, mode="json"))
    logged: list[str] = []

    class Log:
        def info(self, msg: str) -> None:
            logged.append(msg)

        def warning(self, msg: str) -> None:
            logged.append(msg)

    with dg.DagsterInstance.ephemeral() as instance:
        run = dg.DagsterRun(
            job_name=engine.JOB_NAME,
            run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
            run_config=config,
            status=dg.DagsterRunStatus.FAILURE,
            tags={engine.JOB_ID: JOB_ID, engine.RESULTS_NFT: nft},
        )
        instance.add_run(run)
        recorder = JobRecorder(instance, run.run_id, Log())
        finish_results_handover(recorder, run)
        tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
    assert dev.chain.contracts.at("ERC721Template", nft).functions.ownerOf(1).call() == dev.consumer.address
    record = json.loads(tags[engine.RESULTS_ASSET])
    assert record["status"] == "failed"
    assert f"the NFT {nft} was handed over to {dev.consumer.address}" in record["detail"]
    assert "hand-over by the watchdog" in record["detail"]
    assert record["detail"].endswith("the asset's metadata may be incomplete")
    assert engine.RESULTS_DID not in tags and engine.RESULTS_ASSET_FILES not in tags
    assert logged and "metadata may be incomplete" in logged[0]


def test_skip_reasons() -> None:
    assert skip_reason(MANIFEST, stopped=False, algorithm_termination="Completed") == ""
    assert "stopped on request" in skip_reason(MANIFEST, stopped=True, algorithm_termination="Completed")
    assert "ended with OOMKilled" in skip_reason(MANIFEST, stopped=False, algorithm_termination="OOMKilled")
    assert "no outputs" in skip_reason(MANIFEST[2:], stopped=False, algorithm_termination="Completed")
    failed = skip_reason(
        MANIFEST, stopped=False, algorithm_termination=None, failure="31 Data provisioning failed"
    )
    assert (
        failed == "the job ended with status 31 Data provisioning failed; nothing was published as an asset"
    )


# --- the engine: compute_job in process, with the real sandbox and pod programs -----------------------

ENVIRONMENTS = """
environments:
  - id: test-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 20
    maxJobs: 2
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""

TRAIN = """
import json, os
did = json.loads(os.environ["DIDS"])[0]
total = sum(int(line) for line in open(f"/data/inputs/{did}/0") if line.strip())
open("/data/outputs/model.txt", "w").write(str(total))
print("trained", total)
"""


@pytest.fixture
def engine_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_chain: DevChain) -> Path:
    home = make_c2d_home(
        tmp_path, monkeypatch, ENVIRONMENTS, configure_deadline=None, provider_key=dev_chain.provider_key
    )
    for name, value in {
        "C2D_CHAIN_RPC_URL": dev_chain.rpc_url,
        "C2D_CHAIN_ID": "8996",
        "C2D_ADDRESSES_FILE": str(dev_chain.addresses_file),
        "C2D_PROVIDER_URL": PROVIDER_URL,
    }.items():
        monkeypatch.setenv(name, value)
    return home


def _run_job(
    home: Path, origin_url: str, job_id: str, owner: str, rawcode: str = TRAIN, data: str = "numbers.txt"
) -> dict[str, str]:
    workflow = raw_workflow(
        job_id=job_id,
        owner=owner,
        environment="test-env",
        chainId=8996,
        inputs=[
            dataset_input(home, "did:op:" + hashlib.sha256(b"numbers").hexdigest(), [f"{origin_url}/{data}"])
        ],
        algorithm=python_algorithm(rawcode, tag="3.11"),
        output={"publishOutput": True, "metadata": {"name": "Sum model", "tags": ["c2d"]}},
    )
    instance = dg.DagsterInstance.ephemeral()
    result = run_compute_job(workflow, instance)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return dict(run.tags)


@pytest.fixture
def numbers_origin(tmp_path: Path):
    with serve_origin(tmp_path / "origin", {"numbers.txt": "1\n2\n39\n"}) as server:
        yield server


def test_compute_job_publishes_its_results_as_an_asset(
    engine_home: Path, numbers_origin: LocalOrigin, evm_snapshot: DevChain
) -> None:
    dev = evm_snapshot
    tags = _run_job(engine_home, numbers_origin.url, "cd" * 16, dev.consumer.address)
    assert tags[engine.STATUS] == "70", tags.get(engine.STATUS_DETAIL)
    record = json.loads(tags[engine.RESULTS_ASSET])
    assert record["status"] == "published", record
    did = tags[engine.RESULTS_DID]
    assert record["detail"].startswith(f"published as {did}") and "://" not in record["detail"]
    # The asset was done before the job was: its tags are written before dateFinished and status 70.
    resolved = ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key)).resolve(did)
    assert resolved is not None and resolved.ddo["nft"]["owner"] == dev.consumer.address
    provenance = resolved.ddo["metadata"]["additionalInformation"]["c2dProvenance"]
    results = json.loads(tags[engine.RESULTS])
    (model,) = [item for item in results if item["type"] == "output"]
    assert provenance["jobId"] == "cd" * 16 and provenance["environment"] == "test-env"
    assert provenance["outputs"] == [
        {"name": "model.txt", "checksum": model["sha256"], "size": model["filesize"]}
    ]
    files = decrypt_service_files(dev.provider_key, resolved.ddo["services"][0]["files"])
    assert files == [{"type": RESULT_FILE_TYPE, "jobId": "cd" * 16, "index": model["index"]}]
    # What the Provider checks a download against, and the NFT recorded as soon as it was created.
    assert json.loads(tags[engine.RESULTS_ASSET_FILES]) == [model["index"]]
    assert tags[engine.RESULTS_NFT] == resolved.nft_address
    assert (EngineSettings().resolved_results_dir / ("cd" * 16) / "model.txt").read_text() == "42"


def test_compute_job_with_the_chain_down_still_finishes_with_its_results(
    engine_home: Path, numbers_origin: LocalOrigin, dev_chain: DevChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C2D_CHAIN_RPC_URL", "http://127.0.0.1:9")
    tags = _run_job(engine_home, numbers_origin.url, "ef" * 16, dev_chain.consumer.address)
    assert tags[engine.STATUS] == "70" and tags[engine.STATUS_TEXT] == "Job finished"
    record = json.loads(tags[engine.RESULTS_ASSET])
    assert record["status"] == "failed" and "connecting to the chain" in record["detail"]
    assert "127.0.0.1:9" not in record["detail"]
    assert engine.RESULTS_DID not in tags
    assert json.loads(tags[engine.RESULTS])[0]["type"] == "output"
    assert (EngineSettings().resolved_results_dir / ("ef" * 16) / "model.txt").read_text() == "42"


@pytest.mark.parametrize(
    ("rawcode", "data", "status", "reason"),
    [
        ("import sys; sys.exit(3)", "numbers.txt", "70", "the algorithm ended with Error"),
        (TRAIN, "missing.txt", "31", "the job ended with status 31 Data provisioning failed"),
    ],
)
def test_compute_job_records_why_nothing_was_published(
    engine_home: Path,
    numbers_origin: LocalOrigin,
    dev_chain: DevChain,
    rawcode: str,
    data: str,
    status: str,
    reason: str,
) -> None:
    job_id = hashlib.md5(rawcode.encode() + data.encode()).hexdigest()
    tags = _run_job(engine_home, numbers_origin.url, job_id, dev_chain.consumer.address, rawcode, data)
    assert tags[engine.STATUS] == status
    record = json.loads(tags[engine.RESULTS_ASSET])
    assert record["status"] == "skipped" and record["detail"].startswith(reason), record
    assert engine.RESULTS_DID not in tags


def test_concurrent_jobs_publishing_with_the_same_key_both_succeed(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset], tmp_path: Path
) -> None:
    """Run workers share the Provider's key: a nonce taken by one is retried by the other."""
    from concurrent.futures import ThreadPoolExecutor

    dev = evm_snapshot
    settings = _settings(tmp_path, dev)
    workflows = [
        _workflow(chain_assets, dev.consumer.address).model_copy(update={"job_id": job_id})
        for job_id in ("1" * 32, "2" * 32, "3" * 32)
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda workflow: mint_for_job(settings, workflow, MANIFEST), workflows))
    assert [outcome.status for outcome in outcomes] == ["published"] * 3, [o.detail for o in outcomes]
    assert len({outcome.did for outcome in outcomes}) == 3
    resolver = ChainDdoResolver(dev.chain, ecies_decryptor(dev.provider_key))
    for workflow, outcome in zip(workflows, outcomes, strict=True):
        assert outcome.did is not None
        resolved = resolver.resolve(outcome.did)
        assert resolved is not None
        assert resolved.ddo["metadata"]["additionalInformation"]["c2dProvenance"]["jobId"] == workflow.job_id
