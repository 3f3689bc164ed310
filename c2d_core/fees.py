"""Provider fees (the quote a Provider signs, `startOrder` verifies) and the consumer's order transactions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from c2d_core.chain import ZERO_ADDRESS, Chain

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

MAX_UINT256 = 2**256 - 1
# One whole token in its smallest units: datatokens and Ocean's fee tokens have 18 decimals, and a
# new order spends exactly one datatoken.
ONE_TOKEN = 10**18


class FeeError(ValueError):
    """A provider fee is malformed (wrong address, hex, or number)."""


def _address_bytes(value: str, what: str) -> bytes:
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise FeeError(f"{what} is not a hex address") from None
    if len(raw) != 20:
        raise FeeError(f"{what} must be 20 bytes, got {len(raw)}")
    return raw


def _uint256(value: int, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UINT256:
        raise FeeError(f"{what} must be an integer in [0, 2**256)")
    return value.to_bytes(32, "big")


def _hex_bytes(value: str | bytes, what: str, length: int | None = None) -> bytes:
    if isinstance(value, bytes):
        raw = value
    else:
        text = value[2:] if value[:2] in ("0x", "0X") else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise FeeError(f"{what} is not hex") from None
    if length is not None and len(raw) != length:
        raise FeeError(f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def provider_data(
    environment: str | None,
    datatoken: str,
    service_id: str,
    did: str,
    consumer: str,
    timestamp: float | int,
) -> bytes:
    """The signed `providerData`: Ocean's keys first (environment, timestamp, dt, id), then ours.

    Ocean's Provider binds a fee to nothing but the environment, so one signed fee can pay for another
    datatoken or another consumer; `did` and `consumer` close that, and validation checks them.
    """
    document = {
        "environment": environment,
        "timestamp": timestamp,
        "dt": datatoken,
        "id": service_id,
        "did": did,
        "consumer": consumer,
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def fee_message_hash(
    provider_data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int
) -> bytes:
    """keccak256(abi.encodePacked(bytes providerData, address, address, uint256, uint256)), as the datatoken
    contract recomputes it in startOrder/reuseOrder."""
    from eth_utils import keccak

    packed = (
        provider_data
        + _address_bytes(fee_address, "providerFeeAddress")
        + _address_bytes(fee_token, "providerFeeToken")
        + _uint256(amount, "providerFeeAmount")
        + _uint256(valid_until, "validUntil")
    )
    return keccak(packed)


@dataclass(frozen=True)
class ProviderFee:
    provider_fee_address: str
    provider_fee_token: str
    provider_fee_amount: int
    provider_data: bytes
    v: int
    r: bytes
    s: bytes
    valid_until: int

    def to_wire(self) -> dict[str, Any]:
        """Ocean's JSON shape (initialize / initializeCompute `providerFee`)."""
        return {
            "providerFeeAddress": self.provider_fee_address,
            "providerFeeToken": self.provider_fee_token,
            "providerFeeAmount": str(self.provider_fee_amount),
            "providerData": "0x" + self.provider_data.hex(),
            "v": self.v,
            "r": "0x" + self.r.hex(),
            "s": "0x" + self.s.hex(),
            "validUntil": self.valid_until,
        }

    # Mapping protocol, so `dict(fee)` gives the wire shape too.
    def keys(self) -> list[str]:
        return list(self.to_wire())

    def __getitem__(self, key: str) -> Any:
        return self.to_wire()[key]

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ProviderFee:
        try:
            amount = int(data["providerFeeAmount"])
            v = int(data["v"])
            valid_until = int(data["validUntil"])
            fee_address = str(data["providerFeeAddress"])
            fee_token = str(data["providerFeeToken"])
            raw_data, r, s = data["providerData"], data["r"], data["s"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FeeError(f"providerFee is missing or has a malformed field: {exc}") from None
        _address_bytes(fee_address, "providerFeeAddress")
        _address_bytes(fee_token, "providerFeeToken")
        return cls(
            provider_fee_address=fee_address,
            provider_fee_token=fee_token,
            provider_fee_amount=amount,
            provider_data=_hex_bytes(raw_data, "providerData"),
            v=v,
            r=_hex_bytes(r, "r", 32),
            s=_hex_bytes(s, "s", 32),
            valid_until=valid_until,
        )

    def as_contract_tuple(self) -> tuple[Any, ...]:
        """The `providerFee` struct argument of startOrder/reuseOrder (note providerData comes last)."""
        from web3 import Web3

        return (
            Web3.to_checksum_address(self.provider_fee_address),
            Web3.to_checksum_address(self.provider_fee_token),
            self.provider_fee_amount,
            self.v,
            self.r,
            self.s,
            self.valid_until,
            self.provider_data,
        )

    def message_hash(self) -> bytes:
        return fee_message_hash(
            self.provider_data,
            self.provider_fee_address,
            self.provider_fee_token,
            self.provider_fee_amount,
            self.valid_until,
        )


def sign_provider_fee(
    private_key: str | bytes,
    provider_data: bytes,
    fee_address: str,
    fee_token: str,
    amount: int,
    valid_until: int,
) -> ProviderFee:
    """Sign a fee as Ocean's Provider does: EIP-191 (`\\n32` prefix) over the packed hash, v = 27 or 28."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    digest = fee_message_hash(provider_data, fee_address, fee_token, amount, valid_until)
    signed = Account.sign_message(encode_defunct(primitive=digest), private_key)
    return ProviderFee(
        provider_fee_address=fee_address,
        provider_fee_token=fee_token,
        provider_fee_amount=amount,
        provider_data=provider_data,
        v=int(signed.v),
        r=int(signed.r).to_bytes(32, "big"),
        s=int(signed.s).to_bytes(32, "big"),
        valid_until=valid_until,
    )


def recover_fee_signer(fee: ProviderFee) -> str:
    """The checksum address that signed `fee` (v may be 0/1 or 27/28)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    v = fee.v + 27 if fee.v in (0, 1) else fee.v
    return str(
        Account.recover_message(
            encode_defunct(primitive=fee.message_hash()),
            vrs=(v, int.from_bytes(fee.r, "big"), int.from_bytes(fee.s, "big")),
        )
    )


def fee_amount(price_per_minute: Decimal | str | int, seconds: int, decimals: int = 18) -> int:
    """The fee in token base units for `seconds` of an environment priced per minute (rounded down).

    Uses whole seconds (Ocean's Provider takes timedelta.seconds, which wraps after a day).
    """
    price = Decimal(str(price_per_minute))
    if price < 0 or seconds < 0:
        raise FeeError("price and duration must not be negative")
    units = price * Decimal(max(seconds, 0)) / Decimal(60) * (Decimal(10) ** decimals)
    return int(units.to_integral_value(rounding=ROUND_DOWN))


def _tx_hex(tx_hash: Any) -> str:
    return "0x" + bytes(tx_hash).hex()


def start_order(
    chain: Chain,
    account: LocalAccount,
    datatoken: str,
    consumer_address: str,
    service_index: int,
    provider_fee: ProviderFee,
    consume_market_fee: tuple[str, str, int] = (ZERO_ADDRESS, ZERO_ADDRESS, 0),
) -> str:
    """Order one service: spends 1 datatoken of `account` (the payer) and pays the provider fee; tx hash.

    A non-zero provider fee needs `approve(fee_token, spender=datatoken)` first.
    """
    contract = chain.contracts.at("ERC20Template", datatoken)
    call = contract.functions.startOrder(
        consumer_address, service_index, provider_fee.as_contract_tuple(), consume_market_fee
    )
    return _tx_hex(chain.send(account, call)["transactionHash"])


def reuse_order(
    chain: Chain, account: LocalAccount, datatoken: str, order_tx: str, provider_fee: ProviderFee
) -> str:
    """Pay a new provider fee for an existing order (emits OrderReused + ProviderFee); tx hash."""
    contract = chain.contracts.at("ERC20Template", datatoken)
    order_id = _hex_bytes(order_tx, "order transaction id", 32)
    call = contract.functions.reuseOrder(order_id, provider_fee.as_contract_tuple())
    return _tx_hex(chain.send(account, call)["transactionHash"])


def approve(chain: Chain, account: LocalAccount, token: str, spender: str, amount: int) -> str:
    contract = chain.contracts.at("ERC20Template", token)
    return _tx_hex(chain.send(account, contract.functions.approve(spender, amount))["transactionHash"])
