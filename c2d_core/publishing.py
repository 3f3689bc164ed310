"""Publisher-side helpers: data NFT + datatoken, DDOs on chain (`setMetaData` flags 0-3), minting.

Used by the CLI, the demo, the results asset and the tests. Reading DDOs back from `MetadataCreated/Updated`
is c2d_core/ocean/ddo_reader.py.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from c2d_core.chain import ZERO_ADDRESS, Chain
from c2d_core.contracts import decode_logs
from c2d_core.ocean.ddo_reader import FLAG_ENCRYPTED, FLAG_LZMA, KNOWN_FLAGS, MetadataError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3.types import TxReceipt

DEFAULT_CAP_WEI = 10**30


def ddo_bytes(ddo: dict[str, Any]) -> bytes:
    """The DDO serialised as ocean.py does before hashing: compact JSON, key order kept."""
    return json.dumps(ddo, separators=(",", ":")).encode("utf-8")


def encode_ddo(
    ddo: dict[str, Any], flags: int, encrypt: Callable[[bytes], bytes] | None = None
) -> tuple[bytes, bytes]:
    """(data, metaDataHash) for setMetaData; the hash is over the plain JSON, whatever the flags."""
    if flags & ~KNOWN_FLAGS:
        raise MetadataError(f"flags {flags} has unknown bits; allowed: 0, 1 (lzma), 2 (encrypted), 3 (both)")
    plain = ddo_bytes(ddo)
    data = plain
    if flags & FLAG_LZMA:
        data = lzma.compress(data)
    if flags & FLAG_ENCRYPTED:
        if encrypt is None:
            raise MetadataError("flags ask for an encrypted DDO but no encrypt function was given")
        data = encrypt(data)
    return data, hashlib.sha256(plain).digest()


def ecies_encryptor(public_key_hex: str) -> Callable[[bytes], bytes]:
    """What the Provider's /api/services/encrypt does, as a local function (ECIES to its public key)."""
    from c2d_core.crypto import encrypt_for

    return lambda data: bytes.fromhex(encrypt_for(public_key_hex, data)[2:])


def ecies_decryptor(private_key_hex: str) -> Callable[[bytes], bytes]:
    from c2d_core.crypto import decrypt_with

    return lambda data: decrypt_with(private_key_hex, data.hex())


def create_asset(
    chain: Chain,
    publisher: LocalAccount,
    name: str,
    symbol: str,
    *,
    datatoken_name: str | None = None,
    datatoken_symbol: str | None = None,
    cap_wei: int = DEFAULT_CAP_WEI,
    token_uri: str = "",
    minter: str | None = None,
    payment_collector: str = ZERO_ADDRESS,
    template_index: int = 1,
    transferable: bool = True,
) -> tuple[str, str]:
    """Create a data NFT and its first datatoken in one transaction; returns (nft, datatoken) addresses.

    The publisher owns the NFT (with all its roles) and is the datatoken's minter unless `minter` is given;
    a zero payment collector means order payments go to the NFT owner.
    """
    factory_address = chain.address("ERC721Factory")
    factory = chain.contracts.at("ERC721Factory", factory_address)
    nft_data = (name, symbol, 1, token_uri, transferable, publisher.address)
    erc20_data: tuple[Any, ...] = (
        template_index,
        [datatoken_name or f"{name} datatoken", datatoken_symbol or f"{symbol}-DT"],
        [minter or publisher.address, payment_collector, ZERO_ADDRESS, ZERO_ADDRESS],
        [cap_wei, 0],
        [],
    )
    receipt = chain.send(publisher, factory.functions.createNftWithErc20(nft_data, erc20_data))
    nft = _single_arg(chain, receipt, factory_address, "NFTCreated", "newTokenAddress")
    datatoken = _single_arg(chain, receipt, factory_address, "TokenCreated", "newTokenAddress")
    return nft, datatoken


def _single_arg(chain: Chain, receipt: TxReceipt, emitter: str, event_name: str, arg: str) -> str:
    event = chain.contracts.event("ERC721Factory", event_name)
    values = [item["args"][arg] for item in decode_logs(event, receipt["logs"], emitter)]
    if len(values) != 1:
        raise MetadataError(f"expected one {event_name} event from the factory, found {len(values)}")
    return str(values[0])


def set_metadata(
    chain: Chain,
    publisher: LocalAccount,
    nft: str,
    ddo: dict[str, Any],
    *,
    flags: int,
    provider_url: str,
    provider_address: str,
    encrypt: Callable[[bytes], bytes] | None = None,
    state: int = 0,
) -> TxReceipt:
    """Store the DDO on the NFT (emits MetadataCreated the first time, MetadataUpdated after)."""
    data, metadata_hash = encode_ddo(ddo, flags, encrypt)
    contract = chain.contracts.at("ERC721Template", nft)
    call = contract.functions.setMetaData(
        state, provider_url, provider_address, bytes([flags]), data, metadata_hash, []
    )
    return chain.send(publisher, call)


def mint(chain: Chain, minter: LocalAccount, datatoken: str, to: str, amount_wei: int) -> TxReceipt:
    contract = chain.contracts.at("ERC20Template", datatoken)
    return chain.send(minter, contract.functions.mint(to, amount_wei))
