"""Ocean v4 contract artifacts (ABI, bytecode from the `ocean-contracts` wheel) and cached web3 contracts."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from web3 import Web3
    from web3.contract import Contract
    from web3.contract.contract import ContractEvent
    from web3.types import EventData

# The wheel installs its JSON files as a top-level folder named `artifacts` (and `addresses`), names generic
# enough to collide with other packages, so we locate them through the distribution, never by importing.
_DISTRIBUTION = "ocean-contracts"


class ArtifactError(Exception):
    """A contract artifact is missing or malformed."""


@functools.cache
def artifacts_dir() -> Path:
    try:
        dist = metadata.distribution(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ArtifactError(
            f"the {_DISTRIBUTION!r} package is not installed; run `make install` (pinned in pyproject.toml)"
        ) from None
    folder = Path(str(dist.locate_file("artifacts")))
    if not folder.is_dir():
        raise ArtifactError(f"{_DISTRIBUTION} is installed but has no artifacts folder at {folder}")
    return folder


@functools.cache
def artifact(name: str) -> dict[str, Any]:
    """The Hardhat artifact of contract `name` (keys `abi`, `bytecode`, ...); read once per process."""
    if not name.isidentifier():
        raise ArtifactError(f"{name!r} is not a contract name")
    path = artifacts_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no artifact named {name!r} in {artifacts_dir()}") from None
    if not isinstance(data, dict) or not isinstance(data.get("abi"), list):
        raise ArtifactError(f"artifact {name!r} has no ABI")
    return data


def abi(name: str) -> list[dict[str, Any]]:
    return list(artifact(name)["abi"])


def bytecode(name: str) -> str:
    code = artifact(name).get("bytecode")
    if not isinstance(code, str) or len(code) <= 2:
        raise ArtifactError(
            f"artifact {name!r} has no deployable bytecode (an interface or abstract contract?)"
        )
    if artifact(name).get("linkReferences"):
        raise ArtifactError(f"artifact {name!r} needs library linking, which is not supported")
    return code


class Contracts:
    """web3 Contract objects per (name, address), built once: web3 8 spends 10-20 ms constructing each."""

    def __init__(self, w3: Web3) -> None:
        self._w3 = w3
        self._bound: dict[tuple[str, str], Contract] = {}
        self._deployers: dict[str, type[Contract]] = {}
        self._decoders: dict[str, type[Contract]] = {}

    def at(self, name: str, address: str) -> Contract:
        from web3 import Web3

        checksum = Web3.to_checksum_address(address)
        key = (name, checksum)
        contract = self._bound.get(key)
        if contract is None:
            contract = self._w3.eth.contract(address=checksum, abi=abi(name))
            self._bound[key] = contract
        return contract

    def factory(self, name: str) -> type[Contract]:
        """The address-less contract class, for deploying (`.constructor(...)`) and decoding logs."""
        contract = self._deployers.get(name)
        if contract is None:
            contract = self._w3.eth.contract(abi=abi(name), bytecode=bytecode(name))
            self._deployers[name] = contract
        return contract

    def event(self, name: str, event_name: str) -> ContractEvent:
        """An event decoder of contract `name`; decoding a log does not depend on the contract's address."""
        contract = self._decoders.get(name)
        if contract is None:
            contract = self._w3.eth.contract(abi=abi(name))
            self._decoders[name] = contract
        return contract.events[event_name]()


def decode_logs(event: ContractEvent, logs: Iterable[Any], emitter: str) -> list[EventData]:
    """The `event` logs emitted by `emitter` only.

    web3's `process_receipt` matches topics, not the emitting address, so a contract of anyone's making in
    the same transaction could otherwise pass off look-alike events as the real ones.
    """
    topic = event.topic.lower()
    wanted = emitter.lower()
    decoded = []
    for log in logs:
        topics = log["topics"]
        if str(log["address"]).lower() != wanted or not topics:
            continue
        if "0x" + bytes(topics[0]).hex() != topic:
            continue
        decoded.append(event.process_log(log))
    return decoded
