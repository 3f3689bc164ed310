"""The publisher's tools the demo, the benches and the tests share with `c2d publish`.

`publish_asset` does what ocean.py's publish does: NFT + datatoken, the files encrypted through the
Provider's `encrypt`, the DDO set on chain (compressed and encrypted, flags 3); `mint_to` hands a
holder datatokens, each of which pays for one order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eth_account.signers.local import LocalAccount

from c2d_cli.provider_client import ProviderClient
from c2d_core.chain import Chain
from c2d_core.fees import ONE_TOKEN

SAMPLE_CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    # A fixed digest: the embedded sandbox maps `python@sha256:*` to the host's Python.
    "checksum": "sha256:" + hashlib.sha256(b"c2d-sample-python-3.11").hexdigest(),
}


@dataclass(frozen=True)
class PublishedAsset:
    did: str
    nft: str
    datatoken: str
    service_id: str
    service_index: int = 0


def publish_asset(
    chain: Chain,
    publisher: LocalAccount,
    provider: ProviderClient,
    *,
    name: str,
    files: list[dict[str, Any]],
    asset_type: str,
    service_type: str,
    compute: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    timeout: int = 3600,
    description: str | None = None,
    author: str | None = None,
) -> PublishedAsset:
    """`description` defaults to the name, `author` to the publisher's address (Ocean's DDO needs both)."""
    from c2d_core.ocean.dids import did_for
    from c2d_core.publishing import create_asset, set_metadata

    root = provider.root()
    provider_address = root["providerAddresses"][str(chain.chain_id)]
    nft, datatoken = create_asset(chain, publisher, name, name[:6].upper().replace(" ", ""))
    did = did_for(nft, chain.chain_id)
    files_document = {"datatokenAddress": datatoken, "nftAddress": nft, "files": files}
    encrypted_files = provider.encrypt(json.dumps(files_document).encode(), chain.chain_id)
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    metadata: dict[str, Any] = {
        "created": now,
        "updated": now,
        "type": asset_type,
        "name": name,
        "description": description or name,
        "author": author or publisher.address,
        "license": "CC0-1.0",
    }
    if container is not None:
        metadata["algorithm"] = {"language": "python", "version": "0.1", "container": container}
    service: dict[str, Any] = {
        "id": service_type,
        "type": service_type,
        "files": encrypted_files,
        "datatokenAddress": datatoken,
        "serviceEndpoint": provider.url,
        "timeout": timeout,
    }
    if compute is not None:
        service["compute"] = compute
    ddo = {
        "@context": ["https://w3id.org/did/v1"],
        "id": did,
        "version": "4.1.0",
        "chainId": chain.chain_id,
        "nftAddress": nft,
        "metadata": metadata,
        "services": [service],
    }
    set_metadata(
        chain,
        publisher,
        nft,
        ddo,
        flags=3,
        provider_url=provider.url,
        provider_address=provider_address,
        encrypt=lambda data: bytes.fromhex(provider.encrypt(data, chain.chain_id).removeprefix("0x")),
    )
    return PublishedAsset(did=did, nft=nft, datatoken=datatoken, service_id=service_type)


def mint_to(
    chain: Chain, publisher: LocalAccount, asset: PublishedAsset, holder: str, amount: int = 5
) -> None:
    from c2d_core.publishing import mint

    mint(chain, publisher, asset.datatoken, holder, amount * ONE_TOKEN)
