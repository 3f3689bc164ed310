"""The chain RPC down during a start: the Provider answers 503 in Ocean's error shape, launches
nothing, and leaves nothing half-done, so the same order starts once the chain is back.

The chain is anvil SIGSTOPped: connections are accepted and never answered (a hung node, the worst
case for a client), so the Provider gives up after PROVIDER_RPC_TIMEOUT. The nonce of the refused
request is spent (nonces are checked before anything else), but the agreement's claim is taken only
after every on-chain check, so the retry with a fresh nonce uses the very same orders.
"""

from __future__ import annotations

from typing import Any

import pytest
from faultkit import paused

from c2d_cli.provider_client import ProviderError
from c2d_core.fees import ProviderFee, start_order

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]


def _quote_and_pay(s: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """initializeCompute, then startOrder for the dataset and the algorithm; the start's two refs
    and the initializeCompute request body."""
    valid_until = s.chain.block_timestamp() + 3600
    request = {
        "datasets": [{"documentId": s.dataset.did, "serviceId": s.dataset.service_id}],
        "algorithm": {"documentId": s.algorithm.did, "serviceId": s.algorithm.service_id},
        "env_id": s.env["id"],
        "valid_until": valid_until,
        "consumer": s.consumer.address,
    }
    quote = s.provider.initialize_compute(**request)
    orders = []
    for asset, answer in ((s.dataset, quote["datasets"][0]), (s.algorithm, quote["algorithm"])):
        fee = ProviderFee.from_wire(answer["providerFee"])
        orders.append(
            start_order(
                s.chain, s.consumer, asset.datatoken, s.env["consumerAddress"], asset.service_index, fee
            )
        )
    dataset = {**request["datasets"][0], "transferTxId": orders[0]}
    algorithm = {**request["algorithm"], "transferTxId": orders[1]}
    return dataset, algorithm, request


def _job_ids(s: Any) -> set[str]:
    return {job["jobId"] for job in s.provider.status(s.consumer.address)}


def _assert_backend_503(error: ProviderError, rpc_url: str) -> None:
    assert error.status == 503, (error.status, error.body)
    assert isinstance(error.body, dict) and isinstance(error.body.get("error"), str), error.body
    assert "chain" in error.body["error"].lower(), error.body
    # Nothing of the node's address reaches the consumer.
    host_port = rpc_url.split("//", 1)[1]
    assert host_port not in str(error.body) and host_port.split(":")[1] not in str(error.body)


def test_chain_hung_during_start_is_503_and_the_same_orders_start_once_it_is_back(ocean_stack: Any) -> None:
    s = ocean_stack
    dataset, algorithm, init_request = _quote_and_pay(s)
    jobs_before = _job_ids(s)
    nonce_before = s.provider.nonce(s.consumer.address)

    with paused(s.running.anvil_pid):
        with pytest.raises(ProviderError) as refused:
            s.provider.start(s.consumer, dataset, algorithm, s.env["id"])
        _assert_backend_503(refused.value, s.running.rpc_url)
        with pytest.raises(ProviderError) as refused_quote:
            s.provider.initialize_compute(**init_request)
        _assert_backend_503(refused_quote.value, s.running.rpc_url)
        # No run was launched (status reads run storage, not the chain).
        assert _job_ids(s) == jobs_before

    # The refused request spent its nonce and nothing else: a fresh nonce and the same orders start.
    assert s.provider.nonce(s.consumer.address) == nonce_before + 1
    [job] = s.provider.start(s.consumer, dataset, algorithm, s.env["id"])
    try:
        assert job["status"] == 1 and job["statusText"] == "Warming up", job
        assert job["agreementId"] and _job_ids(s) == jobs_before | {job["jobId"]}
    finally:
        s.provider.stop(s.consumer, job["jobId"])
