"""DDO resolution for the Provider: which asset a DID names, and the files of its services, as the
compute, download and fileinfo flows use them.

The chain is read by `c2d_core.ocean.ddo_reader` (its DID index and decoded DDOs are kept between
requests; state and owner are read on every resolve); this module gives the checks their view of it and
turns a DDO that cannot be used into `AssetError`. `Assets` answers the consumer's side in Ocean's words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from c2d_core.ocean.ddo_reader import ChainDdoReader, DidMismatchError
from provider_api.errors import bad_request, resource_error

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


class Assets:
    """One per Provider process: the assets a request names, and the files their services hold."""

    def __init__(self, resolver: DdoResolver, private_key_hex: str) -> None:
        self.resolver = resolver
        self._private_key_hex = private_key_hex

    def resolve(self, did: str, resource: str) -> ResolvedAsset:
        """The asset `did` names; 400 `{resource: did_not_found}` when there is none or it is unusable."""
        try:
            asset = self.resolver.resolve(did)
        except AssetError:
            raise resource_error(resource, "did_not_found") from None
        if asset is None:
            raise resource_error(resource, "did_not_found")
        return asset

    def _decrypt_files(self, asset: ResolvedAsset, service: dict[str, Any]) -> list[dict[str, Any]]:
        from c2d_core.crypto import decrypt_service_files

        return decrypt_service_files(
            self._private_key_hex,
            str(service.get("files", "")),
            expected_nft_address=asset.nft_address,
            expected_datatoken_address=str(service.get("datatokenAddress", "")),
        )

    def service_files(self, asset: ResolvedAsset, service: dict[str, Any]) -> list[dict[str, Any]]:
        """The decrypted file objects of one of the asset's services (fileinfo, download); a 400 when
        they were sealed for another Provider or belong to another asset than the DDO's."""
        from c2d_core.crypto import CryptoError

        try:
            return self._decrypt_files(asset, service)
        except CryptoError:
            raise bad_request("the service's files cannot be decrypted by this Provider") from None

    def check_files_readable(self, asset: ResolvedAsset, service: dict[str, Any], resource: str) -> None:
        """The engine decrypts each input's files with this Provider's key: refuse, before anyone pays
        or a job starts, an input whose files were sealed for another provider or copied from
        another asset (Ocean's `compute_services_not_in_same_provider`)."""
        from c2d_core.crypto import CryptoError

        try:
            self._decrypt_files(asset, service)
        except (CryptoError, ValueError):
            raise resource_error(resource, "compute_services_not_in_same_provider") from None

    def algorithm_files(self, asset: ResolvedAsset, service: dict[str, Any]) -> list[dict[str, Any]]:
        """An algorithm's files, to hash them: files sealed for another key, or copied from another
        asset, are the algorithm's fault (400 file_unavailable), not a backend failure."""
        from c2d_core.crypto import CryptoError

        try:
            return self._decrypt_files(asset, service)
        except (CryptoError, ValueError):
            raise resource_error("algorithm", "file_unavailable") from None
