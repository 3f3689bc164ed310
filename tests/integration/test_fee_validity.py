"""Provider fees on an idle chain (issue 16, item 10), on the real anvil chain.

An idle anvil mines no blocks, so its latest block's timestamp lags wall time; the next transaction's
block is then mined at about wall time. A validUntil counted from chain time alone was in the past by
the time `startOrder` was mined, and the start was refused after the datatoken was spent. Chain time
cannot be moved back, so the tests move wall time ahead instead: the consumer flow and the Provider's
fees get a clock that reads the chain's latest block plus 20 minutes, a chain idle for that long.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures_chain import DT, ChainAsset, DevChain

from c2d_cli.cli_output import CliError
from c2d_cli.consumer import (
    Target,
    check_can_pay,
    check_quotes,
    order_validity,
    place_orders,
    quote_time,
)
from c2d_core.chain import Chain
from c2d_core.environments import Environment
from provider_api.fees import ProviderFees
from provider_api.main import create_app
from provider_api.orders import OrderError, validate_order
from provider_api.settings import ProviderSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

IDLE = 20 * 60  # longer than a quote's validity (maxJobDuration + the queue allowance)
ENV = "ocean-compute"
CLOSED_GRAPHQL = "http://127.0.0.1:9/graphql"  # nothing listens: no request here may reach Dagster


def setup(dev: DevChain, tmp_path: Path) -> tuple[Chain, Any, ProviderFees, Environment, dict[str, Any]]:
    chain = Chain.connect(dev.rpc_url, dev.addresses_file)

    def wall() -> float:
        return chain.block_timestamp() + IDLE

    settings = ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}", graphql_url=CLOSED_GRAPHQL
    )
    assert settings.address == dev.provider.address
    env = Environment(id=ENV, maxJobDuration=60, priceMin=1.0)
    env_json = {"id": ENV, "maxJobDuration": 60, "consumerAddress": dev.provider.address}
    assert order_validity(env_json) < IDLE  # so chain time alone would quote an expired fee
    ocean = chain.contracts.at("OceanToken", chain.address("Ocean"))
    chain.send(dev.deployer, ocean.functions.transfer(dev.consumer.address, 100 * DT))
    return chain, wall, ProviderFees(settings, chain, clock=wall), env, env_json


def quoted_for(
    fees: ProviderFees, env: Environment, asset: ChainAsset, consumer: str, valid_until: int
) -> list[tuple[Target, dict[str, Any]]]:
    fee = fees.quote(env, asset.datatoken, asset.service_ids[0], asset.did, consumer, valid_until, True)
    return [
        (
            Target(asset.did, asset.service_ids[0], 0, "the dataset"),
            {"datatoken": asset.datatoken, "providerFee": fee},
        )
    ]


def datatokens_of(chain: Chain, asset: ChainAsset, holder: str) -> int:
    return int(chain.contracts.at("ERC20Template", asset.datatoken).functions.balanceOf(holder).call())


def test_a_quote_from_the_later_clock_is_ordered_and_accepted_after_the_chain_idled(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset], tmp_path: Path
) -> None:
    dev, (asset, _) = evm_snapshot, chain_assets
    chain, wall, fees, env, env_json = setup(dev, tmp_path)
    assert fees.now() == int(wall()) > chain.block_timestamp()

    valid_until = quote_time(chain, wall) + order_validity(env_json)
    assert valid_until >= int(wall()) + order_validity(env_json)
    quoted = quoted_for(fees, env, asset, dev.consumer.address, valid_until)
    fee = quoted[0][1]["providerFee"]
    # Priced for the validity asked for, not for the 20 idle minutes besides.
    assert int(fee["providerFeeAmount"]) <= fees.fee_amount(env, order_validity(env_json))
    check_quotes(chain, env_json, quoted, wall)
    check_can_pay(chain, dev.consumer.address, quoted)
    [tx] = place_orders(chain, dev.consumer, env_json, quoted, lambda _text: None)

    # The Provider's check at computeStart, on the same basis as the quote: valid, and paid enough.
    order = validate_order(
        chain,
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
        allowed_consumers={dev.provider.address},
        now=fees.now(),
    )
    assert order.valid_until == valid_until
    fees.ensure_paid(env, [order])


def test_a_quote_counted_from_chain_time_alone_is_refused_before_anything_is_sent(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset], tmp_path: Path
) -> None:
    """What the flow did before: validUntil from the idle chain's latest block. The consumer now
    refuses it before any transaction; the datatoken and the nonce stay as they were."""
    dev, (asset, _) = evm_snapshot, chain_assets
    chain, wall, fees, env, env_json = setup(dev, tmp_path)
    stale = chain.block_timestamp() + order_validity(env_json)
    quoted = quoted_for(fees, env, asset, dev.consumer.address, stale)
    balance = datatokens_of(chain, asset, dev.consumer.address)
    nonce = chain.w3.eth.get_transaction_count(dev.consumer.address)

    with pytest.raises(CliError) as refused:
        check_quotes(chain, env_json, quoted, wall)
    assert "has expired" in refused.value.message and "nothing was paid" in refused.value.hint
    assert datatokens_of(chain, asset, dev.consumer.address) == balance
    assert chain.w3.eth.get_transaction_count(dev.consumer.address) == nonce


def test_the_provider_judges_an_order_by_the_later_clock(
    evm_snapshot: DevChain, chain_assets: tuple[ChainAsset, ChainAsset], tmp_path: Path
) -> None:
    """An order whose validUntil chain time has not reached but wall-clock has is expired: the
    Provider's start check uses the basis its quotes use."""
    dev, (asset, _) = evm_snapshot, chain_assets
    chain, _wall, fees, env, env_json = setup(dev, tmp_path)
    stale = chain.block_timestamp() + order_validity(env_json)
    [tx] = place_orders(
        chain,
        dev.consumer,
        env_json,
        quoted_for(fees, env, asset, dev.consumer.address, stale),
        lambda _text: None,
    )
    with pytest.raises(OrderError) as refused:
        validate_order(
            chain,
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
            allowed_consumers={dev.provider.address},
            now=fees.now(),
        )
    assert (refused.value.reason, refused.value.code) == ("fee_expired", "order_expired")


def test_initialize_compute_refuses_a_valid_until_that_wall_clock_has_passed(
    dev_chain: DevChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP: the Provider's initializeCompute judges validUntil by its fees' clock, so a quote
    the consumer could never order in time is refused before anyone pays."""
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))
    chain, wall, _fees, _env, _env_json = setup(dev_chain, tmp_path)
    settings = ProviderSettings(
        nonce_db_url=f"sqlite:///{tmp_path / 'nonces.db'}",
        graphql_url=CLOSED_GRAPHQL,
        rpc_url=dev_chain.rpc_url,
        addresses_file=dev_chain.addresses_file,
    )
    app = create_app(settings)
    app.state.fees = ProviderFees(settings, chain, clock=wall)

    def initialize(valid_until: int) -> Any:
        body = {
            "datasets": [{"documentId": "did:op:" + "1" * 64, "serviceId": "compute"}],
            "algorithm": {"documentId": "did:op:" + "2" * 64, "serviceId": "access"},
            "compute": {"env": ENV, "validUntil": valid_until},
            "consumerAddress": dev_chain.consumer.address,
        }
        return client.post("/api/services/initializeCompute", json=body)

    with TestClient(app, raise_server_exceptions=False) as client:
        stale = initialize(chain.block_timestamp() + 900)
        assert stale.status_code == 400 and stale.json() == {"error": "The validUntil value is not correct."}
        fresh = initialize(int(wall()) + 900)
        # Past the validity check: the next refusal is the unknown dataset.
        assert fresh.status_code == 400 and "validUntil" not in fresh.text, fresh.text
