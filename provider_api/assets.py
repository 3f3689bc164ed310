"""DDO resolution for the Provider: which asset a DID names, as the compute and download checks use it.

The chain is read by `c2d_core.ocean.ddo_reader` (its DID index and decoded DDOs are kept between
requests; state and owner are read on every resolve); this module gives the checks their view of it and
turns a DDO that cannot be used into `AssetError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from c2d_core.ocean.ddo_reader import ChainDdoReader, DidMismatchError

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
    """Resolves DIDs from the chain's metadata events, decrypting DDOs with the Provider's key."""

    def __init__(self, chain: Chain, decrypt: Callable[[bytes], bytes]) -> None:
        self._reader = ChainDdoReader(chain, decrypt)

    def resolve(self, did: str) -> ResolvedAsset | None:
        found = self._reader.read(did)
        if found is None or found.latest is None:
            return None
        if found.ddo is None:
            if isinstance(found.error, DidMismatchError):
                raise AssetError("the DDO on chain names another DID")
            raise AssetError(f"the DDO of {found.did} cannot be read: {found.error}")
        return ResolvedAsset(
            did=found.did, ddo=found.ddo, nft_address=found.nft, chain_id=found.chain_id, state=found.state
        )
