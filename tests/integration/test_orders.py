"""Order validation against real orders on anvil: the happy paths, then one test per refusal."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import rlp
from eth_abi import encode as abi_encode
from eth_utils import keccak
from fixtures_chain import DT, ChainAsset, DevChain

from c2d_core.chain import TransactionReverted
from c2d_core.fees import ProviderFee, approve, provider_data, reuse_order, sign_provider_fee, start_order
from provider_api.orders import OrderError, ValidatedOrder, ensure_fee_paid, validate_order

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ENV = "env-1"
ZERO = "0x0000000000000000000000000000000000000000"
TIMEOUT = 3600


def fee_for(
    dev: DevChain,
    asset: ChainAsset,
    consumer: str,
    *,
    service: int = 0,
    environment: str | None = ENV,
    datatoken: str | None = None,
    valid_for: int | None = 600,
    signer: Any = None,
    amount: int = 0,
    token: str = ZERO,
) -> ProviderFee:
    """A fee as our Provider issues it from initializeCompute (bound to asset, service and consumer)."""
    now = dev.now()
    data = provider_data(
        environment, datatoken or asset.datatoken, asset.service_ids[service], asset.did, consumer, now
    )
    key = signer or dev.provider
    valid_until = 0 if valid_for is None else now + valid_for  # 0: the fee never expires
    return sign_provider_fee(bytes(key.key), data, key.address, token, amount, valid_until)


def order(
    dev: DevChain,
    asset: ChainAsset,
    payer: Any,
    fee: ProviderFee,
    *,
    service_index: int = 0,
    consumer: str | None = None,
) -> str:
    return start_order(dev.chain, payer, asset.datatoken, consumer or payer.address, service_index, fee)


def check(
    dev: DevChain,
    asset: ChainAsset,
    tx_id: str,
    requester: str,
    *,
    service: int = 0,
    environment: str | None = ENV,
    timeout: int = TIMEOUT,
    allowed: tuple[str, ...] = (),
    nft: str | None = None,
) -> ValidatedOrder:
    return validate_order(
        dev.chain,
        tx_id=tx_id,
        datatoken=asset.datatoken,
        nft=nft or asset.nft,
        service_id=asset.service_ids[service],
        service_index=service,
        service_timeout=timeout,
        consumer=requester,
        provider_address=dev.provider.address,
        environment=environment,
        allowed_consumers=set(allowed),
        did=asset.did,
    )


@contextmanager
def refused(reason: str, code: str = "order_invalid") -> Iterator[None]:
    with pytest.raises(OrderError) as info:
        yield
    assert (info.value.reason, info.value.code) == (reason, code), info.value


# -- happy paths ---------------------------------------------------------------------------------------


def test_start_order_is_valid(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address))
    check(dev, asset, tx, dev.consumer.address)  # warm the contract and datatoken caches
    result = check(dev, asset, tx, dev.consumer.address)
    assert result.order_tx == tx and not result.reused
    assert (result.consumer, result.payer, result.amount) == (dev.consumer.address, dev.consumer.address, DT)
    assert result.provider_data["environment"] == ENV and result.provider_data["did"] == asset.did
    assert result.provider_fee_address == dev.provider.address
    assert result.valid_until > result.checked_at >= result.timestamp
    # Downloads (no environment) skip the environment check only.
    assert check(dev, asset, tx, dev.consumer.address, environment=None).tx_id == tx


def test_reused_order_is_valid_and_restarts_the_timeout(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address, valid_for=None))
    dev.advance(TIMEOUT + 60)
    with refused("timeout", "order_expired"):
        check(dev, asset, tx, dev.consumer.address)
    reuse_tx = reuse_order(
        dev.chain, dev.consumer, asset.datatoken, tx, fee_for(dev, asset, dev.consumer.address)
    )
    result = check(dev, asset, reuse_tx, dev.consumer.address)
    assert result.reused and result.tx_id == reuse_tx and result.order_tx == tx
    assert result.timestamp > dev.now() - 60


def test_payer_may_use_an_order_naming_the_environment(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    # How ocean.py and ocean.js order compute: consumer = the environment's consumerAddress.
    dev, (asset, _) = evm_snapshot, chain_assets
    env_address = dev.stranger.address
    fee = fee_for(dev, asset, dev.consumer.address)
    tx = order(dev, asset, dev.consumer, fee, consumer=env_address)
    result = check(dev, asset, tx, dev.consumer.address, allowed=(env_address,))
    assert (result.consumer, result.payer) == (env_address, dev.consumer.address)


# -- refusals ------------------------------------------------------------------------------------------


def test_unknown_tx(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    with refused("tx_not_found", "in_use_or_not_on_chain"):
        check(dev, asset, "0x" + secrets.token_hex(32), dev.consumer.address)
    with refused("tx_id"):
        check(dev, asset, "0x1234", dev.consumer.address)


def test_reverted_tx(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    fee = fee_for(dev, asset, dev.stranger.address)
    contract = dev.chain.contracts.at("ERC20Template", asset.datatoken)
    call = contract.functions.startOrder(dev.stranger.address, 0, fee.as_contract_tuple(), (ZERO, ZERO, 0))
    # A fixed gas limit skips estimation, so the transaction is mined and reverts (the stranger has no DT).
    with pytest.raises(TransactionReverted) as info:
        dev.chain.send(dev.stranger, call, gas=500_000)
    assert info.value.tx_hash
    with refused("tx_reverted", "in_use_or_not_on_chain"):
        check(dev, asset, info.value.tx_hash, dev.stranger.address)


def test_order_of_another_datatoken(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, other) = evm_snapshot, chain_assets
    tx = order(dev, other, dev.consumer, fee_for(dev, other, dev.consumer.address))
    with refused("no_order", "in_use_or_not_on_chain"):
        check(dev, asset, tx, dev.consumer.address)


def test_datatoken_of_another_nft(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, other) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address))
    with refused("datatoken"):
        check(dev, asset, tx, dev.consumer.address, nft=other.nft)
    with refused("datatoken"):  # not an NFT of our factory at all
        check(dev, asset, tx, dev.consumer.address, nft=dev.stranger.address)
    with refused("address"):
        check(dev, asset, tx, dev.consumer.address, nft="0x1234")


def test_fee_without_our_provider_data(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    # The contract accepts any providerData, e.g. a fee signed by this key for some other purpose.
    fee = sign_provider_fee(bytes(dev.provider.key), b"not json", dev.provider.address, ZERO, 0, 0)
    tx = order(dev, asset, dev.consumer, fee)
    with refused("provider_data"):
        check(dev, asset, tx, dev.consumer.address)


def test_wrong_service_index(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address), service_index=1)
    with refused("service_index"):
        check(dev, asset, tx, dev.consumer.address)
    # The fee names service 0, so the order cannot pass for service 1 either.
    with refused("fee_service"):
        check(dev, asset, tx, dev.consumer.address, service=1)


def test_wrong_environment(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address, environment="env-cheap"))
    with refused("environment"):
        check(dev, asset, tx, dev.consumer.address, environment="env-gpu")


def test_fee_signed_by_another_key(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    # The contract only checks that the fee's own address signed it; anyone can sign fees to themselves.
    fee = fee_for(dev, asset, dev.consumer.address, signer=dev.stranger)
    tx = order(dev, asset, dev.consumer, fee)
    with refused("fee_address"):
        check(dev, asset, tx, dev.consumer.address)


def test_fee_replayed_by_another_consumer(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    fee = fee_for(dev, asset, dev.consumer.address)
    order(dev, asset, dev.consumer, fee)
    replay = order(dev, asset, dev.other_consumer, fee)  # same signed fee, accepted by the contract
    with refused("fee_consumer"):
        check(dev, asset, replay, dev.other_consumer.address)


def test_fee_for_another_datatoken(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, other) = evm_snapshot, chain_assets
    fee = fee_for(dev, other, dev.consumer.address)  # issued for the other asset's datatoken
    tx = order(dev, asset, dev.consumer, fee)
    with refused("fee_datatoken"):
        check(dev, asset, tx, dev.consumer.address)


def test_fee_for_another_asset(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, other) = evm_snapshot, chain_assets
    now = dev.now()
    data = provider_data(ENV, asset.datatoken, asset.service_ids[0], other.did, dev.consumer.address, now)
    fee = sign_provider_fee(bytes(dev.provider.key), data, dev.provider.address, ZERO, 0, now + 600)
    tx = order(dev, asset, dev.consumer, fee)
    with refused("fee_did"):
        check(dev, asset, tx, dev.consumer.address)


def test_fee_expired_by_chain_time(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address, valid_for=120))
    check(dev, asset, tx, dev.consumer.address)
    dev.advance(121)
    with refused("fee_expired", "order_expired"):
        check(dev, asset, tx, dev.consumer.address)


def test_requester_neither_consumer_nor_payer(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    # Even with a fee issued to the stranger, the order (paid by and for the consumer) is not theirs.
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.stranger.address))
    with refused("requester"):
        check(dev, asset, tx, dev.stranger.address)


def test_payer_of_an_order_for_someone_else(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(
        dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address), consumer=dev.stranger.address
    )
    assert check(dev, asset, tx, dev.consumer.address).payer == dev.consumer.address  # Ocean's rule
    with refused("requester"):  # with an environment's consumerAddress known, only orders naming it
        check(dev, asset, tx, dev.consumer.address, allowed=(dev.other_consumer.address,))


def test_timeout_exceeded(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    tx = order(dev, asset, dev.consumer, fee_for(dev, asset, dev.consumer.address, valid_for=10 * TIMEOUT))
    dev.advance(61)
    check(dev, asset, tx, dev.consumer.address, timeout=60 + 5)
    with refused("timeout", "order_expired"):
        check(dev, asset, tx, dev.consumer.address, timeout=60)
    assert check(dev, asset, tx, dev.consumer.address, timeout=0).tx_id == tx  # 0 = no timeout


def test_fees_paid(evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]) -> None:
    dev, (asset, other) = evm_snapshot, chain_assets
    ocean_address = dev.chain.address("Ocean")
    ocean = dev.chain.contracts.at("OceanToken", ocean_address)
    dev.chain.send(dev.deployer, ocean.functions.transfer(dev.consumer.address, 3 * DT))
    approve(dev.chain, dev.consumer, ocean_address, asset.datatoken, 2 * DT)
    paid = fee_for(dev, asset, dev.consumer.address, amount=2 * DT, token=ocean_address)
    free = fee_for(dev, other, dev.consumer.address)
    orders = [
        check(dev, other, order(dev, other, dev.consumer, free), dev.consumer.address),
        check(dev, asset, order(dev, asset, dev.consumer, paid), dev.consumer.address),
    ]
    assert ensure_fee_paid(orders, 2 * DT, ocean_address) is orders[1]
    assert ensure_fee_paid(orders, 0) is orders[0]
    with refused("fees_not_paid", "fees_not_paid"):
        ensure_fee_paid(orders, 2 * DT + 1, ocean_address)
    with refused("fees_not_paid", "fees_not_paid"):
        ensure_fee_paid(orders, DT, ZERO)


# -- look-alike events from another contract -------------------------------------------------------------


def _push(value: int, width: int) -> bytes:
    return bytes([0x5F + width]) + value.to_bytes(width, "big")


def _initcode(calls: list[tuple[str, bytes]], logs: list[tuple[list[bytes], bytes]]) -> bytes:
    """EVM creation code that CALLs each (address, calldata), reverting if one fails, then emits each
    (topics, data) log as the new contract, and deploys nothing. Blobs sit after the code (CODECOPY)."""

    def assemble(base: int) -> tuple[bytes, bytes]:
        code, blobs = bytearray(), bytearray()

        def load(blob: bytes) -> None:  # memory[0:len] = blob
            code.extend(_push(len(blob), 2) + _push(base + len(blobs), 2) + _push(0, 1) + b"\x39")
            blobs.extend(blob)

        for address, calldata in calls:
            load(calldata)
            code.extend(_push(0, 1) + _push(0, 1) + _push(len(calldata), 2) + _push(0, 1) + _push(0, 1))
            code.extend(_push(int(address, 16), 20) + b"\x5a\xf1")  # GAS CALL
            # PUSH2 ok JUMPI; PUSH1 0 PUSH1 0 REVERT; ok: JUMPDEST
            ok = len(code) + 3 + 1 + 2 + 2 + 1
            code.extend(_push(ok, 2) + b"\x57" + _push(0, 1) + _push(0, 1) + b"\xfd\x5b")
        for topics, data in logs:
            load(data)
            for topic in reversed(topics):
                code.extend(b"\x7f" + topic)
            code.extend(_push(len(data), 2) + _push(0, 1) + bytes([0xA0 + len(topics)]))
        code.append(0x00)
        return bytes(code), bytes(blobs)

    size = len(assemble(0)[0])
    code, blobs = assemble(size)
    assert len(code) == size
    return code + blobs


def _create(dev: DevChain, account: Any, initcode: bytes) -> dict:
    w3 = dev.chain.w3
    tx = {
        "from": account.address,
        "data": initcode,
        "nonce": w3.eth.get_transaction_count(account.address),
        "chainId": dev.chain.chain_id,
        "gas": 3_000_000,
        "gasPrice": w3.eth.gas_price * 2,
    }
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def _next_contract_address(dev: DevChain, account: Any) -> str:
    nonce = dev.chain.w3.eth.get_transaction_count(account.address)
    return dev.chain.w3.to_checksum_address(
        keccak(rlp.encode([bytes.fromhex(account.address[2:]), nonce]))[12:]
    )


def _word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def _fake_order_started(dev: DevChain, consumer: str, service_index: int) -> tuple[list[bytes], bytes]:
    topic = bytes.fromhex(dev.chain.contracts.event("ERC20Template", "OrderStarted").topic[2:])
    data = abi_encode(
        ["address", "uint256", "uint256", "uint256", "uint256"], [consumer, DT, service_index, dev.now(), 1]
    )
    return [topic, _word(consumer), _word(ZERO)], data


def _fake_provider_fee(dev: DevChain, fee: ProviderFee) -> tuple[list[bytes], bytes]:
    topic = bytes.fromhex(dev.chain.contracts.event("ERC20Template", "ProviderFee").topic[2:])
    data = abi_encode(
        ["uint256", "bytes", "uint8", "bytes32", "bytes32", "uint256"],
        [fee.provider_fee_amount, fee.provider_data, fee.v, fee.r, fee.s, fee.valid_until],
    )
    return [topic, _word(fee.provider_fee_address), _word(fee.provider_fee_token)], data


def test_lookalike_events_alone_are_not_an_order(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    from web3.logs import DISCARD

    dev, (asset, _) = evm_snapshot, chain_assets
    attacker = dev.stranger
    # A genuine fee (initialize is unauthenticated), but no datatoken is ever spent.
    fee = fee_for(dev, asset, attacker.address)
    receipt = _create(
        dev,
        attacker,
        _initcode([], [_fake_order_started(dev, attacker.address, 0), _fake_provider_fee(dev, fee)]),
    )
    # web3 decodes them as the datatoken's events: it matches topics, not the emitting address.
    dt = dev.chain.contracts.at("ERC20Template", asset.datatoken)
    assert len(dt.events.OrderStarted().process_receipt(receipt, errors=DISCARD)) == 1
    assert len(dt.events.ProviderFee().process_receipt(receipt, errors=DISCARD)) == 1
    with refused("no_order", "in_use_or_not_on_chain"):
        check(dev, asset, "0x" + bytes(receipt["transactionHash"]).hex(), attacker.address)


def test_lookalike_events_beside_a_real_order_are_ignored(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    attacker = dev.other_consumer
    contract_address = _next_contract_address(dev, attacker)
    dev.chain.send(
        dev.publisher,
        dev.chain.contracts.at("ERC20Template", asset.datatoken).functions.mint(contract_address, DT),
    )
    # The real order is for service 0; the fee and a fake OrderStarted claim service 1.
    fee = fee_for(dev, asset, attacker.address, service=1)
    dt = dev.chain.contracts.at("ERC20Template", asset.datatoken)
    calldata = bytes.fromhex(
        dt.encode_abi("startOrder", [attacker.address, 0, fee.as_contract_tuple(), (ZERO, ZERO, 0)])[2:]
    )
    receipt = _create(
        dev,
        attacker,
        _initcode(
            [(asset.datatoken, calldata)],
            [_fake_order_started(dev, attacker.address, 1), _fake_provider_fee(dev, fee)],
        ),
    )
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
    emitters = {log["address"] for log in receipt["logs"]}
    assert {contract_address, asset.datatoken} <= emitters
    with refused("service_index"):
        check(dev, asset, tx, attacker.address, service=1)
    # And the fakes do not spoil the genuine events' "exactly one" count.
    with refused("fee_service"):
        check(dev, asset, tx, attacker.address, service=0)


def test_ocean_py_pattern_fee_for_the_environment_paid_by_the_user(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    # ocean.py's quickstart: initializeCompute with the environment's address, startOrder naming it.
    dev, (asset, _) = evm_snapshot, chain_assets
    env_address = dev.provider.address
    fee = fee_for(dev, asset, env_address)
    tx = order(dev, asset, dev.consumer, fee, consumer=env_address)
    validated = check(dev, asset, tx, dev.consumer.address, allowed=(env_address,))
    assert validated.payer.lower() == dev.consumer.address.lower()
    # The same order cannot be used by anyone but its payer.
    with refused("requester"):
        check(dev, asset, tx, dev.other_consumer.address, allowed=(env_address,))
    # Without the environment allowed, a fee naming someone else is refused.
    with refused("fee_consumer"):
        check(dev, asset, tx, dev.consumer.address)
