"""DDO resolution: which asset a DID names, read from the chain's metadata events.

The chain resolver indexes the factory's `NFTCreated` events to map DIDs (sha256 of NFT address and
chain id) to NFTs, then decodes the NFT's latest `MetadataCreated/Updated` event: decompressed,
decrypted with the provider key when flagged, and checked against its `metaDataHash`. Results are
cached per metadata event; state and owner are read on every resolve.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from c2d_core.chain import Chain


class AssetError(Exception):
    """The DDO exists but cannot be used (bad hash, undecryptable, inconsistent)."""


@dataclass(frozen=True)
class ResolvedAsset:
    did: str
    ddo: dict[str, Any]
    nft_address: str
    chain_id: int
    state: int

    def service(self, service_id: str) -> tuple[int, dict[str, Any]] | None:
        """The service with this id and its index in `services` (the order's serviceIndex)."""
        for index, service in enumerate(self.ddo.get("services", [])):
            if isinstance(service, dict) and service.get("id") == service_id:
                return index, service
        return None


class DdoResolver(Protocol):
    def resolve(self, did: str) -> ResolvedAsset | None: ...


class ChainDdoResolver:
    def __init__(self, chain: Chain, decrypt: Callable[[bytes], bytes]) -> None:
        self._chain = chain
        self._decrypt = decrypt
        self._lock = threading.Lock()
        self._did_to_nft: dict[str, str] = {}
        self._next_block = int(chain.addresses.get("startBlock", 0) or 0)
        self._decoded: dict[tuple[str, int, int], dict[str, Any]] = {}

    def _refresh_index(self) -> None:
        from c2d_core.publishing import did_for

        factory = self._chain.contracts.at("ERC721Factory", self._chain.address("ERC721Factory"))
        latest = self._chain.w3.eth.block_number
        if latest < self._next_block:
            return
        logs = factory.events.NFTCreated().get_logs(from_block=self._next_block, to_block=latest)
        for log in logs:
            nft = log["args"]["newTokenAddress"]
            self._did_to_nft[did_for(nft, self._chain.chain_id)] = nft
        self._next_block = latest + 1

    def resolve(self, did: str) -> ResolvedAsset | None:
        from c2d_core.publishing import MetadataError, decode_ddo, read_metadata_events

        did = did.lower()
        with self._lock:
            if did not in self._did_to_nft:
                self._refresh_index()
            nft = self._did_to_nft.get(did)
        if nft is None:
            return None
        events = read_metadata_events(self._chain, nft)
        if not events:
            return None
        latest = events[-1]
        key = (nft, int(latest.block), int(latest.log_index))
        ddo = self._decoded.get(key)
        if ddo is None:
            try:
                ddo = decode_ddo(latest, self._decrypt)
            except MetadataError as error:
                raise AssetError(f"the DDO of {did} cannot be read: {error}") from None
            if str(ddo.get("id", "")).lower() != did:
                raise AssetError("the DDO on chain names another DID")
            self._decoded[key] = ddo
        # State and owner are read each time: a revocation or a transfer must take effect at once.
        contract = self._chain.contracts.at("ERC721Template", nft)
        state = int(contract.functions.getMetaData().call()[2])
        owner = str(contract.functions.ownerOf(1).call())
        # What Aquarius adds to a DDO: the NFT's address, owner and state, and the chain id.
        enriched = {
            **ddo,
            "chainId": self._chain.chain_id,
            "nft": {"address": nft, "owner": owner, "state": state},
        }
        return ResolvedAsset(
            did=did, ddo=enriched, nft_address=nft, chain_id=self._chain.chain_id, state=state
        )
