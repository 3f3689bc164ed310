"""A real local chain for tests: one anvil per session with the Ocean contracts deployed, per-test snapshots.

Accounts come from anvil's public mnemonic: 0 deployer, 1 publisher, 2 consumer, 3 another consumer,
4 a stranger, 9 the provider (the index the Provider's development settings derive its key from).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from c2d_cli.chain_stack import start_anvil, stop_anvil

PROVIDER_INDEX = 9
DT = 10**18


@dataclass
class DevChain:
    chain: Any  # c2d_core.chain.Chain (imported lazily: web3 is heavy)
    rpc_url: str
    addresses_file: Path
    pid: int
    deployer: Any
    publisher: Any
    consumer: Any
    other_consumer: Any
    stranger: Any
    provider: Any
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def provider_key(self) -> str:
        return "0x" + bytes(self.provider.key).hex()

    def snapshot(self) -> str:
        return str(self.chain.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.chain.rpc("evm_revert", snapshot_id):
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")

    def advance(self, seconds: int) -> int:
        """Move chain time forward and mine a block, so the latest block shows the new time."""
        self.chain.rpc("evm_increaseTime", seconds)
        self.chain.rpc("evm_mine")
        return int(self.chain.block_timestamp())

    def now(self) -> int:
        return int(self.chain.block_timestamp())


@dataclass
class ChainAsset:
    nft: str
    datatoken: str
    did: str
    service_ids: list[str]


def publish_test_asset(dev: DevChain, name: str, holders: list[Any], flags: int = 1) -> ChainAsset:
    """A data NFT + datatoken with a two-service DDO on chain; 5 datatokens minted to each holder."""
    from c2d_core.ocean.dids import did_for
    from c2d_core.publishing import create_asset, mint, set_metadata

    chain = dev.chain
    nft, datatoken = create_asset(chain, dev.publisher, name, name[:4].upper())
    did = did_for(nft, chain.chain_id)
    service_ids = [f"{name}-compute", f"{name}-access"]
    ddo = {
        "@context": ["https://w3id.org/did/v1"],
        "id": did,
        "version": "4.1.0",
        "chainId": chain.chain_id,
        "nftAddress": nft,
        "metadata": {"type": "dataset", "name": name, "author": "tests", "license": "CC0"},
        "services": [
            {"id": service_ids[0], "type": "compute", "datatokenAddress": datatoken, "timeout": 3600},
            {"id": service_ids[1], "type": "access", "datatokenAddress": datatoken, "timeout": 0},
        ],
    }
    set_metadata(
        chain,
        dev.publisher,
        nft,
        ddo,
        flags=flags,
        provider_url="http://127.0.0.1:8030",
        provider_address=dev.provider.address,
    )
    for holder in holders:
        mint(chain, dev.publisher, datatoken, holder.address, 5 * DT)
    return ChainAsset(nft=nft, datatoken=datatoken, did=did, service_ids=service_ids)


@pytest.fixture(scope="session")
def dev_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    home = tmp_path_factory.mktemp("chain")
    started = time.perf_counter()
    pid, rpc_url = start_anvil(home, None, persist_state=False)
    try:
        anvil_seconds = time.perf_counter() - started
        from c2d_core.chain import Chain, dev_account
        from c2d_core.deploy import deploy_ocean, write_addresses_file

        chain = Chain.connect(rpc_url, chain_id=8996)
        started = time.perf_counter()
        addresses = deploy_ocean(chain, dev_account(0))
        deploy_seconds = time.perf_counter() - started
        addresses_file = home / "addresses.json"
        write_addresses_file(addresses_file, addresses)
        yield DevChain(
            chain=chain,
            rpc_url=rpc_url,
            addresses_file=addresses_file,
            pid=pid,
            deployer=dev_account(0),
            publisher=dev_account(1),
            consumer=dev_account(2),
            other_consumer=dev_account(3),
            stranger=dev_account(4),
            provider=dev_account(PROVIDER_INDEX),
            timings={"anvil_start": anvil_seconds, "deploy": deploy_seconds},
        )
    finally:
        stop_anvil(pid)


@pytest.fixture(scope="session")
def chain_assets(dev_chain: DevChain) -> tuple[ChainAsset, ChainAsset]:
    """Two published assets, created once per session before any test's snapshot (so never reverted)."""
    holders = [dev_chain.consumer, dev_chain.other_consumer]
    return (
        publish_test_asset(dev_chain, "alpha", holders),
        publish_test_asset(dev_chain, "beta", holders),
    )


@pytest.fixture
def evm_snapshot(dev_chain: DevChain) -> Iterator[DevChain]:
    """The session chain, reverted after the test to the state before it (time included)."""
    snapshot_id = dev_chain.snapshot()
    yield dev_chain
    dev_chain.revert(snapshot_id)
