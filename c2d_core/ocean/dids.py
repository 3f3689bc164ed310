"""Ocean's DID of a data NFT, the name every DDO, order and job input uses for an asset."""

from __future__ import annotations

import hashlib


def did_for(nft_address: str, chain_id: int) -> str:
    """Ocean's DID of a data NFT: did:op: + sha256(checksum address + decimal chain id)."""
    from web3 import Web3

    digest = hashlib.sha256((Web3.to_checksum_address(nft_address) + str(chain_id)).encode()).hexdigest()
    return f"did:op:{digest}"
