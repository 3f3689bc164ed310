"""One EVM chain as the Provider and dev tools see it: web3, Ocean contract addresses, signed transactions."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2d_core.contracts import Contracts

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3
    from web3.types import TxReceipt

# anvil's (and hardhat's) public test mnemonic: keys derived from it are known to everyone, so they are
# for the local development chain only; settings refuse them elsewhere.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 8996
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

# Network entry keys of Ocean's address.json that name a single contract; the templates are {"1": addr, ...}.
CONTRACT_KEYS = ("Ocean", "Router", "FixedPrice", "Dispenser", "ERC721Factory", "OPFCommunityFeeCollector")
TEMPLATE_KEYS = ("ERC20Template", "ERC721Template")


class ChainError(Exception):
    """The chain is unreachable, misconfigured, or answered something unusable."""


class TransactionReverted(ChainError):
    """A transaction was refused by the EVM: at gas estimation (never sent) or when mined (`tx_hash` set)."""

    def __init__(self, message: str, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


@functools.cache
def dev_account(index: int) -> LocalAccount:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def dev_accounts(n: int = 10) -> list[LocalAccount]:
    """The first `n` accounts of anvil's public mnemonic (each funded with 10000 ETH on a fresh anvil)."""
    return [dev_account(i) for i in range(n)]


def dev_private_keys(n: int = 10) -> set[str]:
    """Lowercase 0x-hex keys of the public dev accounts, so production settings can refuse them."""
    return {"0x" + bytes(dev_account(i).key).hex() for i in range(n)}


def read_addresses(path: Path, chain_id: int | None = None, network: str | None = None) -> dict[str, Any]:
    """The network entry of an Ocean address.json, chosen by `network` name or else by `chainId`."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ChainError(f"addresses file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ChainError(f"addresses file {path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ChainError(f"addresses file {path} is not an object of networks")
    if network is not None:
        entry = document.get(network)
        if not isinstance(entry, dict):
            raise ChainError(f"addresses file {path} has no network {network!r}")
        return entry
    matches = [
        entry
        for entry in document.values()
        if isinstance(entry, dict) and chain_id is not None and entry.get("chainId") == chain_id
    ]
    if len(matches) != 1:
        raise ChainError(
            f"addresses file {path} has {len(matches)} networks with chainId {chain_id}; expected exactly one"
        )
    return matches[0]


class Chain:
    """A web3 connection plus the Ocean contract addresses deployed on it."""

    def __init__(self, w3: Web3, chain_id: int, addresses: dict[str, Any], rpc_url: str = "") -> None:
        self.w3 = w3
        self.chain_id = chain_id
        self.addresses = addresses
        self.rpc_url = rpc_url
        self.contracts = Contracts(w3)

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        addresses_file: Path | None = None,
        chain_id: int | None = None,
        *,
        timeout: float = 30.0,
    ) -> Chain:
        """Connect and check the chain id; with `addresses_file`, load the entry whose chainId matches."""
        from web3 import Web3

        # No automatic retries: an unreachable chain should surface at once (the Provider answers 503).
        provider = Web3.HTTPProvider(
            rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
        )
        w3 = Web3(provider)
        try:
            actual = int(w3.eth.chain_id)
        except Exception as exc:
            raise ChainError(f"cannot reach the chain at {rpc_url}: {type(exc).__name__}") from None
        if chain_id is not None and actual != chain_id:
            raise ChainError(f"the chain at {rpc_url} has chain id {actual}, expected {chain_id}")
        addresses = read_addresses(addresses_file, chain_id=actual) if addresses_file is not None else {}
        return cls(w3, actual, addresses, rpc_url)

    def address(self, key: str, template: int = 1) -> str:
        """A contract address from the network entry, e.g. `address("ERC721Factory")`."""
        from web3 import Web3

        value = self.addresses.get(key)
        if isinstance(value, dict):
            value = value.get(str(template))
        if not isinstance(value, str):
            raise ChainError(
                f"no {key!r} address for chain {self.chain_id}; the addresses file is missing or incomplete"
            )
        return Web3.to_checksum_address(value)

    def rpc(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call, for node extras such as `evm_snapshot` and `evm_increaseTime`."""
        response = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"{method} failed: {response['error']}")
        return response.get("result")

    def block_timestamp(self) -> int:
        """Chain time: the latest block's timestamp (what contracts see; `evm_increaseTime` moves it)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def send(self, account: LocalAccount, call: Any, *, gas: int | None = None, value: int = 0) -> TxReceipt:
        """Sign `call` (a contract function or constructor) locally, send it, and return the mined receipt.

        Raises TransactionReverted with the EVM's reason: at gas estimation, so nothing is sent, or, when
        `gas` is given and estimation is skipped, after mining with the transaction hash.
        """
        from web3.exceptions import ContractLogicError

        label = getattr(call, "fn_name", None) or type(call).__name__
        params: dict[str, Any] = {
            "from": account.address,
            "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": self.chain_id,
            "value": value,
        }
        if gas is not None:
            params["gas"] = gas
        try:
            tx = call.build_transaction(params)
        except ContractLogicError as exc:
            raise TransactionReverted(f"{label} reverted: {exc.message or exc}") from None
        signed = account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)
        if receipt["status"] != 1:
            raise TransactionReverted(f"{label} reverted when mined", tx_hash="0x" + bytes(tx_hash).hex())
        return receipt

    def deploy(self, account: LocalAccount, name: str, *args: Any) -> str:
        """Deploy artifact `name` with constructor `args`; returns the new contract's checksum address."""
        receipt = self.send(account, self.contracts.factory(name).constructor(*args))
        address = receipt["contractAddress"]
        if not address:
            raise ChainError(f"deploying {name} produced no contract address")
        return str(address)
