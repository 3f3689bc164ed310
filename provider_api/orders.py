"""On-chain order validation: is `transferTxId` a paid, unexpired order of this service, for this requester?

Runs every check of Ocean's Provider plus two it misses: only logs emitted by the datatoken itself count
(a contract of anyone's making in the same transaction can emit look-alike events), and the provider fee is
bound to its use through `providerData` (environment, datatoken, service id, DID, consumer), so a signed fee
cannot be replayed by another consumer or for another datatoken. Time is chain time (the latest block).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from c2d_core.chain import Chain
from c2d_core.contracts import decode_logs
from c2d_core.fees import ProviderFee, recover_fee_signer
from c2d_core.workflow import canonical_tx_id

if TYPE_CHECKING:
    from web3.types import EventData, TxReceipt

# Ocean's error codes; the route decides the field they appear under (dataset.serviceId, algorithm, order).
ORDER_INVALID = "order_invalid"
NOT_ON_CHAIN = "in_use_or_not_on_chain"
ORDER_EXPIRED = "order_expired"
FEES_NOT_PAID = "fees_not_paid"

ONE_DATATOKEN = 10**18

# (nft, datatoken) pairs already proven to belong together on a chain; contracts cannot be undeployed.
_known_datatokens: weakref.WeakKeyDictionary[Chain, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


class OrderError(Exception):
    """The order does not entitle the requester to the service.

    `code` is Ocean's wire code; `reason` names the failed check for logs and tests; the message is safe
    to return to the client.
    """

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class ValidatedOrder:
    tx_id: str  # what the client sent: the startOrder or the reuseOrder transaction
    order_tx: str  # the startOrder transaction (differs from tx_id after a reuse)
    reused: bool
    consumer: str  # OrderStarted.consumer
    payer: str  # OrderStarted.payer, who spent the datatoken
    amount: int
    service_index: int
    timestamp: int  # chain time the order (or its reuse) was mined; the service timeout counts from here
    provider_fee_address: str
    provider_fee_token: str
    provider_fee_amount: int
    valid_until: int
    provider_data: dict[str, Any]
    checked_at: int  # the chain time the checks used


def _same(a: object, b: object) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


def _datatoken_of_nft(chain: Chain, nft: str, datatoken: str) -> bool:
    key = (nft.lower(), datatoken.lower())
    known = _known_datatokens.setdefault(chain, set())
    if key in known:
        return True
    factory = chain.contracts.at("ERC721Factory", chain.address("ERC721Factory"))
    if not _same(factory.functions.erc721List(nft).call(), nft):
        return False
    if not chain.contracts.at("ERC721Template", nft).functions.isDeployed(datatoken).call():
        return False
    known.add(key)
    return True


def _receipt(chain: Chain, tx_id: str, what: str, wait_seconds: float) -> TxReceipt:
    from web3.exceptions import TimeExhausted, TransactionNotFound

    try:
        if wait_seconds > 0:
            receipt = chain.w3.eth.wait_for_transaction_receipt(
                tx_id,  # type: ignore[arg-type]
                timeout=wait_seconds,
                poll_latency=0.2,
            )
        else:
            receipt = chain.w3.eth.get_transaction_receipt(tx_id)  # type: ignore[arg-type]
    except (TransactionNotFound, TimeExhausted):
        raise OrderError(NOT_ON_CHAIN, f"{what} {tx_id} is not on chain", "tx_not_found") from None
    if receipt["status"] != 1:
        raise OrderError(NOT_ON_CHAIN, f"{what} {tx_id} reverted", "tx_reverted")
    return receipt


def _one(events: list[EventData], name: str, tx_id: str, reason: str) -> EventData:
    if len(events) != 1:
        found = "no" if not events else str(len(events))
        raise OrderError(
            NOT_ON_CHAIN if not events else ORDER_INVALID,
            f"transaction {tx_id} has {found} {name} events from the service's datatoken; expected one",
            reason,
        )
    return events[0]


def validate_order(
    chain: Chain,
    *,
    tx_id: str,
    datatoken: str,
    nft: str,
    service_id: str,
    service_index: int,
    service_timeout: int,
    consumer: str,
    provider_address: str,
    did: str,
    environment: str | None = None,
    allowed_consumers: Collection[str] = (),
    now: int | None = None,
    check_expiry: bool = True,
    wait_seconds: float = 0.0,
) -> ValidatedOrder:
    """Check that `tx_id` orders service `service_id` (at `service_index`) of `datatoken` for `consumer`.

    `consumer` is the address that signed the request. `environment` (compute) must match the fee's; None
    skips that check (downloads). `allowed_consumers` are the environment's consumerAddress values: an
    order naming one of them may be used by its payer (Ocean's compute clients order that way); an order
    naming anyone else serves that consumer or its payer, as in Ocean. `now` defaults to chain time.
    """
    canonical = canonical_tx_id(tx_id)  # any case, with or without 0x: one form from here on
    if canonical is None:
        raise OrderError(ORDER_INVALID, "transferTxId must be a 32-byte hex hash (64 hex digits)", "tx_id")
    tx_id = canonical
    from eth_utils import is_address

    for name, value in (("datatoken", datatoken), ("NFT", nft), ("consumer", consumer)):
        if not (isinstance(value, str) and is_address(value)):
            raise OrderError(ORDER_INVALID, f"the {name} address {value!r} is not an address", "address")
    if not _datatoken_of_nft(chain, nft, datatoken):
        raise OrderError(
            ORDER_INVALID, f"datatoken {datatoken} is not a datatoken of the asset's NFT {nft}", "datatoken"
        )
    contracts = chain.contracts
    receipt = _receipt(chain, tx_id, "transaction", wait_seconds)
    logs = receipt["logs"]
    reused_events = decode_logs(contracts.event("ERC20Template", "OrderReused"), logs, datatoken)
    started_events = decode_logs(contracts.event("ERC20Template", "OrderStarted"), logs, datatoken)
    if not reused_events and not started_events:
        raise OrderError(
            NOT_ON_CHAIN, f"transaction {tx_id} is not an order of datatoken {datatoken}", "no_order"
        )
    fee_event = _one(
        decode_logs(contracts.event("ERC20Template", "ProviderFee"), logs, datatoken),
        "ProviderFee",
        tx_id,
        "provider_fee_event",
    )["args"]

    order_tx = tx_id
    if reused_events:
        reuse = _one(reused_events, "OrderReused", tx_id, "order_reused_event")["args"]
        if started_events:
            raise OrderError(
                ORDER_INVALID, f"transaction {tx_id} both starts and reuses an order", "ambiguous"
            )
        order_tx = "0x" + bytes(reuse["orderTxId"]).hex()
        original = _receipt(chain, order_tx, "the reused order", wait_seconds)
        started_events = decode_logs(
            contracts.event("ERC20Template", "OrderStarted"), original["logs"], datatoken
        )
        started = _one(started_events, "OrderStarted", order_tx, "order_started_event")["args"]
        # Reusing pays a fresh provider fee, and Ocean counts the service timeout from the reuse.
        started_at = int(reuse["timestamp"])
    else:
        started = _one(started_events, "OrderStarted", tx_id, "order_started_event")["args"]
        started_at = int(started["timestamp"])

    fee = ProviderFee(
        provider_fee_address=str(fee_event["providerFeeAddress"]),
        provider_fee_token=str(fee_event["providerFeeToken"]),
        provider_fee_amount=int(fee_event["providerFeeAmount"]),
        provider_data=bytes(fee_event["providerData"]),
        v=int(fee_event["v"]),
        r=bytes(fee_event["r"]),
        s=bytes(fee_event["s"]),
        valid_until=int(fee_event["validUntil"]),
    )
    if not _same(fee.provider_fee_address, provider_address):
        raise OrderError(
            ORDER_INVALID, "the order's provider fee was not issued by this provider", "fee_address"
        )
    if not _same(recover_fee_signer(fee), provider_address):
        raise OrderError(
            ORDER_INVALID, "the order's provider fee is not signed by this provider", "fee_signature"
        )

    data = _provider_data(fee.provider_data)
    if not _same(data.get("dt"), datatoken):
        raise OrderError(ORDER_INVALID, "the provider fee was issued for another datatoken", "fee_datatoken")
    if data.get("id") != service_id:
        raise OrderError(ORDER_INVALID, "the provider fee was issued for another service", "fee_service")
    if not _same(data.get("did"), did):
        raise OrderError(ORDER_INVALID, "the provider fee was issued for another asset", "fee_did")
    if environment is not None and data.get("environment") != environment:
        raise OrderError(
            ORDER_INVALID, "the provider fee was issued for another compute environment", "environment"
        )

    if int(started["serviceIndex"]) != service_index:
        raise OrderError(
            ORDER_INVALID,
            f"the order is for service index {started['serviceIndex']}, not {service_index}",
            "service_index",
        )
    if int(started["amount"]) < ONE_DATATOKEN:
        raise OrderError(ORDER_INVALID, "the order spent less than one datatoken", "amount")
    order_consumer, payer = str(started["consumer"]), str(started["payer"])
    if not (_same(order_consumer, consumer) or _same(payer, consumer)):
        raise OrderError(
            ORDER_INVALID, "the requester is neither the order's consumer nor its payer", "requester"
        )
    allowed = {address.lower() for address in allowed_consumers}
    fee_consumer = str(data.get("consumer", ""))
    # ocean.py's quickstart asks initializeCompute for the environment's address, so its fee names the
    # environment, not the user: accepted only from the order's own payer, who paid that fee.
    fee_for_environment = fee_consumer.lower() in allowed and _same(payer, consumer)
    if not _same(fee_consumer, consumer) and not fee_for_environment:
        raise OrderError(ORDER_INVALID, "the provider fee was issued to another consumer", "fee_consumer")
    if allowed and not _same(order_consumer, consumer) and order_consumer.lower() not in allowed:
        raise OrderError(
            ORDER_INVALID,
            "the order names another consumer; a payer may use it only when it names the environment",
            "requester",
        )

    checked_at = chain.block_timestamp() if now is None else now
    if check_expiry and fee.valid_until > 0 and checked_at >= fee.valid_until:
        raise OrderError(ORDER_EXPIRED, "the order's provider fee has expired", "fee_expired")
    if service_timeout > 0 and checked_at - started_at > service_timeout:
        raise OrderError(ORDER_EXPIRED, "the order is older than the service's timeout", "timeout")

    return ValidatedOrder(
        tx_id=tx_id,
        order_tx=order_tx,
        reused=bool(reused_events),
        consumer=order_consumer,
        payer=payer,
        amount=int(started["amount"]),
        service_index=int(started["serviceIndex"]),
        timestamp=started_at,
        provider_fee_address=fee.provider_fee_address,
        provider_fee_token=fee.provider_fee_token,
        provider_fee_amount=fee.provider_fee_amount,
        valid_until=fee.valid_until,
        provider_data=data,
        checked_at=checked_at,
    )


def _provider_data(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise OrderError(
            ORDER_INVALID, "the provider fee's providerData is not a JSON object", "provider_data"
        )
    return data


def ensure_fee_paid(
    orders: Sequence[ValidatedOrder], required_amount: int, fee_token: str | None = None
) -> ValidatedOrder:
    """The first order whose provider fee covers `required_amount` (in `fee_token` when given).

    As Ocean: the fee for a compute job is paid once, on any one of its inputs' orders.
    """
    for order in orders:
        if fee_token is not None and not _same(order.provider_fee_token, fee_token):
            continue
        if order.provider_fee_amount >= required_amount:
            return order
    raise OrderError(FEES_NOT_PAID, "no order paid the provider fee this job needs", "fees_not_paid")
