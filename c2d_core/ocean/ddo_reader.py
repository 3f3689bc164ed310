"""DDOs read straight from the chain, as an embedded Aquarius: the factory's `NFTCreated` events map DIDs to
data NFTs, and an NFT's latest `MetadataCreated/Updated` event holds its DDO (`setMetaData`'s flags say
how: compressed, encrypted for the Provider), checked against the `metaDataHash` stored with it.

One reader for the Provider (which decrypts with its key) and the CLI (which may not hold that key and
then shows what the chain says in the clear).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from c2d_core.ocean.dids import did_for
from c2d_core.ocean.metadata_states import read_metadata_state

if TYPE_CHECKING:
    from c2d_core.chain import Chain

# setMetaData's `flags` byte is a bitmask, applied compress-then-encrypt and undone in reverse.
FLAG_LZMA = 1
FLAG_ENCRYPTED = 2
KNOWN_FLAGS = FLAG_LZMA | FLAG_ENCRYPTED
METADATA_EVENTS = ("MetadataCreated", "MetadataUpdated")


class MetadataError(Exception):
    """A DDO on chain cannot be decoded, or its bytes do not match the metaDataHash stored with it."""


class DidMismatchError(MetadataError):
    """The DDO decodes, but names another DID than the NFT it is stored on."""

    def __init__(self, declared: object) -> None:
        super().__init__(f"the DDO on chain names another DID ({declared})")
        self.declared = declared


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


def datatokens_of(chain: Chain, nft: str) -> list[str]:
    """The datatokens the NFT deployed, in creation order."""
    contract = chain.contracts.at("ERC721Template", nft)
    return [str(token) for token in contract.functions.getTokensList().call()]


@dataclass(frozen=True)
class ChainDdo:
    """What the chain says about a DID. `ddo` carries what Aquarius adds (the chain id, the NFT's address,
    owner and state); it is None when no metadata was set (`events` empty) or it cannot be read (`error`)."""

    did: str
    nft: str
    chain_id: int
    owner: str
    state: int
    events: tuple[MetadataEvent, ...]
    ddo: dict[str, Any] | None
    error: MetadataError | None = None

    @property
    def latest(self) -> MetadataEvent | None:
        """The metadata event in force, or None when the NFT never had metadata."""
        return self.events[-1] if self.events else None


class ChainDdoReader:
    """DID → NFT index and decoded DDOs, both kept between reads (thread-safe).

    The index grows from the last block it saw; a decoded DDO is kept per metadata event, so an update
    is read at once. State and owner are read on every call: a revocation or a transfer emits no
    metadata event and must take effect at once.
    """

    def __init__(self, chain: Chain, decrypt: Callable[[bytes], bytes] | None = None) -> None:
        self._chain = chain
        self._decrypt = decrypt
        self._lock = threading.Lock()
        self._did_to_nft: dict[str, str] = {}
        self._next_block = int(chain.addresses.get("startBlock", 0) or 0)
        self._decoded: dict[tuple[str, int, int], dict[str, Any]] = {}

    def _refresh_index(self) -> None:
        factory = self._chain.contracts.at("ERC721Factory", self._chain.address("ERC721Factory"))
        latest = self._chain.w3.eth.block_number
        if latest < self._next_block:
            return
        logs = factory.events.NFTCreated().get_logs(from_block=self._next_block, to_block=latest)
        for log in logs:
            nft = str(log["args"]["newTokenAddress"])
            self._did_to_nft[did_for(nft, self._chain.chain_id)] = nft
        self._next_block = latest + 1

    def nft_of(self, did: str) -> str | None:
        """The data NFT whose DID is `did` (any case), or None when no NFT has it."""
        did = did.lower()
        with self._lock:
            if did not in self._did_to_nft:
                self._refresh_index()
            return self._did_to_nft.get(did)

    def _decode(self, did: str, nft: str, latest: MetadataEvent) -> dict[str, Any]:
        key = (nft, latest.block, latest.log_index)
        ddo = self._decoded.get(key)
        if ddo is None:
            ddo = decode_ddo(latest, self._decrypt)
            if str(ddo.get("id", "")).lower() != did:
                raise DidMismatchError(ddo.get("id"))
            self._decoded[key] = ddo
        return ddo

    def read(self, did: str) -> ChainDdo | None:
        """The asset `did` names, or None when no data NFT has this DID."""
        did = did.lower()
        nft = self.nft_of(did)
        if nft is None:
            return None
        events = tuple(read_metadata_events(self._chain, nft))
        state = read_metadata_state(self._chain, nft)
        owner = str(self._chain.contracts.at("ERC721Template", nft).functions.ownerOf(1).call())
        ddo: dict[str, Any] | None = None
        error: MetadataError | None = None
        if events:
            try:
                plain = self._decode(did, nft, events[-1])
            except MetadataError as problem:
                error = problem
            else:
                ddo = {
                    **plain,
                    "chainId": self._chain.chain_id,
                    "nft": {"address": nft, "owner": owner, "state": state},
                }
        return ChainDdo(did, nft, self._chain.chain_id, owner, state, events, ddo, error)
