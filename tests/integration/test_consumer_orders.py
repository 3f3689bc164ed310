"""The consumer flow's orders on anvil (c2d_cli.consumer.place_orders, what `c2d compute start`, the demo,
the benches and the e2e tests all pay with): a priced provider fee is paid because the fee token's
allowance is set first, and the order then passes the Provider's own on-chain validation."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_chain import DT, ChainAsset, DevChain

from c2d_cli.consumer import Target, place_orders
from c2d_core.fees import provider_data, sign_provider_fee
from provider_api.orders import ensure_fee_paid, validate_order

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ENV = "env-1"


def quote(dev: DevChain, asset: ChainAsset, amount: int, token: str) -> dict[str, Any]:
    """initializeCompute's answer for one input, as our Provider signs it."""
    now = dev.now()
    data = provider_data(ENV, asset.datatoken, asset.service_ids[0], asset.did, dev.consumer.address, now)
    fee = sign_provider_fee(bytes(dev.provider.key), data, dev.provider.address, token, amount, now + 600)
    return {"datatoken": asset.datatoken, "providerFee": fee.to_wire()}


def ocean_of(dev: DevChain, holder: str) -> int:
    ocean = dev.chain.contracts.at("OceanToken", dev.chain.address("Ocean"))
    return int(ocean.functions.balanceOf(holder).call())


def test_a_priced_fee_is_approved_then_paid(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    ocean_address = dev.chain.address("Ocean")
    ocean = dev.chain.contracts.at("OceanToken", ocean_address)
    dev.chain.send(dev.deployer, ocean.functions.transfer(dev.consumer.address, 3 * DT))
    assert int(ocean.functions.allowance(dev.consumer.address, asset.datatoken).call()) == 0
    before = ocean_of(dev, dev.provider.address)
    said: list[str] = []

    target = Target(asset.did, asset.service_ids[0], 0, "the dataset")
    env = {"id": ENV, "consumerAddress": dev.provider.address}
    quoted = [(target, quote(dev, asset, 2 * DT, ocean_address))]
    [tx] = place_orders(dev.chain, dev.consumer, env, quoted, said.append)

    assert said == [f"startOrder for the dataset: {tx}"]
    assert ocean_of(dev, dev.consumer.address) == DT  # 3 held, 2 paid
    assert ocean_of(dev, dev.provider.address) == before + 2 * DT
    order = validate_order(
        dev.chain,
        tx_id=tx,
        datatoken=asset.datatoken,
        nft=asset.nft,
        service_id=asset.service_ids[0],
        service_index=0,
        service_timeout=3600,
        consumer=dev.consumer.address,
        provider_address=dev.provider.address,
        did=asset.did,
        environment=ENV,
        allowed_consumers=(dev.provider.address,),
    )
    assert ensure_fee_paid([order], 2 * DT, ocean_address) is order


def test_an_allowance_already_set_is_not_approved_again(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset]
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    ocean_address = dev.chain.address("Ocean")
    ocean = dev.chain.contracts.at("OceanToken", ocean_address)
    dev.chain.send(dev.deployer, ocean.functions.transfer(dev.consumer.address, 3 * DT))
    dev.chain.send(dev.consumer, ocean.functions.approve(asset.datatoken, 3 * DT))
    nonce = dev.chain.w3.eth.get_transaction_count(dev.consumer.address)

    target = Target(asset.did, asset.service_ids[0], 0, "the dataset")
    env = {"id": ENV, "consumerAddress": dev.provider.address}
    quoted = [(target, quote(dev, asset, DT, ocean_address))]
    place_orders(dev.chain, dev.consumer, env, quoted, lambda _text: None)

    # One transaction (startOrder), no approve; it spent 1 of the 3 allowed.
    assert dev.chain.w3.eth.get_transaction_count(dev.consumer.address) == nonce + 1
    assert int(ocean.functions.allowance(dev.consumer.address, asset.datatoken).call()) == 2 * DT
