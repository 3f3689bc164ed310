"""The settings and error mapping the fault tests rely on: S3 tries and timeouts reach the publish
pod's environment, and a chain RPC that times out or refuses becomes Ocean's 503 without its address."""

from __future__ import annotations

import pytest
import requests

from c2d_core.s3 import S3Settings
from provider_api.errors import chain_unreachable
from provider_api.settings import ProviderSettings


def test_s3_tries_and_timeout_round_trip_through_the_pod_environment() -> None:
    settings = S3Settings(bucket="b", max_attempts=3, timeout=7.5)
    again = S3Settings.from_env(settings.env())
    assert (again.max_attempts, again.timeout) == (3, 7.5)
    defaults = S3Settings.from_env({"C2D_S3_BUCKET": "b"})
    assert (defaults.max_attempts, defaults.timeout) == (5, 60.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("C2D_S3_MAX_ATTEMPTS", "0", "between 1 and 20"),
        ("C2D_S3_MAX_ATTEMPTS", "many", "must be a number"),
        ("C2D_S3_TIMEOUT", "-1", "more than 0"),
    ],
)
def test_bad_s3_tries_or_timeout_are_refused_with_the_variable_named(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        S3Settings.from_env({"C2D_S3_BUCKET": "b", name: value})
    assert name in str(error.value)


def test_rpc_timeout_is_a_provider_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ProviderSettings().rpc_timeout == 10.0
    monkeypatch.setenv("PROVIDER_RPC_TIMEOUT", "2.5")
    assert ProviderSettings().rpc_timeout == 2.5
    monkeypatch.setenv("PROVIDER_RPC_TIMEOUT", "0")
    with pytest.raises(ValueError):
        ProviderSettings()


def test_chain_transport_errors_become_a_503_message_without_the_node_address() -> None:
    leak = "HTTPConnectionPool(host='10.1.2.3', port=8545): Read timed out."
    timed_out = chain_unreachable(requests.ReadTimeout(leak))
    refused = chain_unreachable(requests.ConnectionError(leak))
    assert timed_out == "the chain is unavailable: the RPC node did not answer in time (ReadTimeout)"
    assert refused == "the chain is unavailable: cannot reach the RPC node (ConnectionError)"
    assert chain_unreachable(ValueError("a bug")) is None
