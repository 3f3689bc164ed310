"""Publisher-side helpers: data NFT + datatoken, DDOs on chain (`setMetaData` flags 0-3), DIDs, minting.

Used by the demo and the tests, and by the Provider to read DDOs back from `MetadataCreated/Updated`.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from c2d_core.chain import ZERO_ADDRESS, Chain
from c2d_core.contracts import decode_logs

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3.types import TxReceipt

# setMetaData's `flags` byte is a bitmask, applied compress-then-encrypt and undone in reverse.
FLAG_LZMA = 1
FLAG_ENCRYPTED = 2
KNOWN_FLAGS = FLAG_LZMA | FLAG_ENCRYPTED
DEFAULT_CAP_WEI = 10**30
METADATA_EVENTS = ("MetadataCreated", "MetadataUpdated")


class MetadataError(Exception):
    """A DDO on chain cannot be decoded, or its bytes do not match the metaDataHash stored with it."""


def did_for(nft_address: str, chain_id: int) -> str:
    """Ocean's DID of a data NFT: did:op: + sha256(checksum address + decimal chain id)."""
    from web3 import Web3

    digest = hashlib.sha256((Web3.to_checksum_address(nft_address) + str(chain_id)).encode()).hexdigest()
    return f"did:op:{digest}"


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


@dataclass(frozen=True)
class MetadataEvent:
    event: str  # "MetadataCreated" or "MetadataUpdated"
    flags: int
    data: bytes
    metadata_hash: bytes
    state: int
    decryptor_url: str
    updated_by: str
    block: int
    timestamp: int
    tx_hash: str
    log_index: int


def read_metadata_events(chain: Chain, nft: str, from_block: int | None = None) -> list[MetadataEvent]:
    """Every MetadataCreated/MetadataUpdated the NFT emitted, oldest first (the last one is current)."""
    from web3 import Web3

    decoders = {name: chain.contracts.event("ERC721Template", name) for name in METADATA_EVENTS}
    by_topic = {decoder.topic.lower(): (name, decoder) for name, decoder in decoders.items()}
    start = from_block if from_block is not None else int(chain.addresses.get("startBlock", 0))
    logs = chain.w3.eth.get_logs(
        {
            "address": Web3.to_checksum_address(nft),
            "fromBlock": start,
            "toBlock": "latest",
            "topics": [list(by_topic)],
        }
    )
    events = []
    for log in logs:
        name, decoder = by_topic["0x" + bytes(log["topics"][0]).hex()]
        args = decoder.process_log(log)["args"]
        flag_bytes = bytes(args["flags"])
        events.append(
            MetadataEvent(
                event=name,
                flags=flag_bytes[0] if flag_bytes else 0,
                data=bytes(args["data"]),
                metadata_hash=bytes(args["metaDataHash"]),
                state=int(args["state"]),
                decryptor_url=str(args["decryptorUrl"]),
                updated_by=str(args["createdBy"] if name == "MetadataCreated" else args["updatedBy"]),
                block=int(log["blockNumber"]),
                timestamp=int(args["timestamp"]),
                tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                log_index=int(log["logIndex"]),
            )
        )
    events.sort(key=lambda item: (item.block, item.log_index))
    return events


def decode_ddo(event: MetadataEvent, decrypt: Callable[[bytes], bytes] | None = None) -> dict[str, Any]:
    """The DDO of a metadata event: decrypt, decompress, then check the bytes against metaDataHash."""
    if event.flags & ~KNOWN_FLAGS:
        raise MetadataError(f"metadata at block {event.block} has unsupported flags {event.flags}")
    data = event.data
    if event.flags & FLAG_ENCRYPTED:
        if decrypt is None:
            raise MetadataError(
                f"metadata at block {event.block} is encrypted and no decrypt function was given"
            )
        try:
            data = decrypt(data)
        except Exception as exc:
            raise MetadataError(f"metadata at block {event.block} could not be decrypted: {exc}") from None
    if event.flags & FLAG_LZMA:
        try:
            data = lzma.decompress(data)
        except lzma.LZMAError:
            raise MetadataError(
                f"metadata at block {event.block} is flagged lzma but does not decompress"
            ) from None
    if hashlib.sha256(data).digest() != event.metadata_hash:
        raise MetadataError(
            f"metadata at block {event.block} does not match its metaDataHash "
            f"(sha256 {hashlib.sha256(data).hexdigest()}, stored {event.metadata_hash.hex()})"
        )
    try:
        ddo = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MetadataError(f"metadata at block {event.block} is not UTF-8 JSON") from None
    if not isinstance(ddo, dict):
        raise MetadataError(f"metadata at block {event.block} is not a JSON object")
    return ddo


def metadata_state(chain: Chain, nft: str) -> int:
    """The NFT's current metadata state (0 active, 1 end-of-life, 2 deprecated, 3 revoked, 4 ordering
    disabled, 5 unlisted), read from the contract rather than from the last event."""
    return int(chain.contracts.at("ERC721Template", nft).functions.getMetaData().call()[2])
