"""The Provider that `c2d dev up` starts: the SSRF guard its settings build from the exact environment
the stack hands it, and the command it runs (the server module with the server's bounds).

The guard is asked for its decision on each address; no test sends traffic to a private, link-local
or public address.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from c2d_cli import stack as stack_module
from c2d_core.fetch import FetchError
from c2d_core.netguard import NetPolicy
from provider_api.settings import ProviderSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OWN_KEY = "0x" + "4c" * 32

REFUSED = [
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "169.254.169.254",
    "[fe80::1]",
    "[::ffff:169.254.169.254]",
]
ALLOWED = ["127.0.0.1", "127.0.0.53", "[::1]", "localhost"]


def stack_for(home: Path) -> stack_module.Stack:
    return stack_module.Stack(
        home=str(home),
        dagster_home=str(home),
        webserver_url="http://127.0.0.1:3300",
        webserver_host="127.0.0.1",
        webserver_port=3300,
        webserver_pid=0,
        daemon_pid=0,
        started_at=0.0,
        provider_url="http://127.0.0.1:8030",
        rpc_url="http://127.0.0.1:8545",
        addresses_file=str(home / "addresses.json"),
    )


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ProviderSettings:
    """ProviderSettings as the Provider process reads them: from exactly `env`, nothing else."""
    for name in list(os.environ):
        if name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ProviderSettings()


def decision(policy: NetPolicy, host: str) -> str:
    try:
        policy.check(httpx.URL(f"http://{host}:9/file"))
    except FetchError:
        return "refused"
    return "allowed"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # A developer's shell with nothing of ours set: what the stack's defaults give.
    for name in list(os.environ):
        if name.startswith(("PROVIDER_", "C2D_")):
            monkeypatch.delenv(name)
    home = (tmp_path / "c2d").resolve()
    stack_module.ensure_provider_key(home)
    return home


def test_the_stack_provider_refuses_private_and_link_local_addresses(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stack_module.provider_env(home, stack_for(home))
    assert env["PROVIDER_FETCH_ALLOW"] == "127.0.0.0/8,::1"
    assert env["PROVIDER_ALLOW_NON_PUBLIC_IP"] == "false"
    settings = settings_from(env, monkeypatch)
    assert settings.environment == "development" and not settings.allow_non_public_ip
    policy = settings.net_policy
    assert {host: decision(policy, host) for host in REFUSED} == dict.fromkeys(REFUSED, "refused")
    assert {host: decision(policy, host) for host in ALLOWED} == dict.fromkeys(ALLOWED, "allowed")


def test_the_stack_provider_allow_list_is_the_configure_pods(home: Path) -> None:
    # One allow-list for the two fetchers of a laptop stack: the Provider's fileinfo and the pods.
    env = stack_module.provider_env(home, stack_for(home))
    assert env["PROVIDER_FETCH_ALLOW"] == env["C2D_FETCH_ALLOW"] == stack_module.LOOPBACK_FETCH_ALLOW


def test_a_shell_allow_everything_does_not_reach_the_stack_provider(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left over in a developer's shell (older docs had the stack set it): the stack overrides it.
    monkeypatch.setenv("PROVIDER_ALLOW_NON_PUBLIC_IP", "true")
    env = stack_module.provider_env(home, stack_for(home))
    policy = settings_from(env, monkeypatch).net_policy
    assert decision(policy, "169.254.169.254") == "refused"
    assert decision(policy, "10.0.0.1") == "refused"


def test_a_developer_widens_the_stack_provider_allow_list_explicitly(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_FETCH_ALLOW", "127.0.0.0/8,192.168.1.0/24")
    env = stack_module.provider_env(home, stack_for(home))
    policy = settings_from(env, monkeypatch).net_policy
    assert decision(policy, "192.168.1.1") == "allowed"
    assert decision(policy, "10.0.0.1") == "refused"
    assert decision(policy, "169.254.169.254") == "refused"


def test_the_stack_runs_the_provider_through_the_server_module() -> None:
    command = stack_module._provider_command(8030)
    assert command[:3] == [sys.executable, "-m", "provider_api.server"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    # The bounds live in provider_api.server (ServerSettings), not in the command line.
    assert not any(arg.startswith(("--timeout", "--limit", "--h11", "--backlog")) for arg in command)


def test_the_provider_image_runs_the_same_server_module() -> None:
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile.provider").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert cmd.group(1).startswith('["python", "-m", "provider_api.server"')
    assert "--timeout" not in cmd.group(1) and "--limit" not in cmd.group(1)


@pytest.mark.parametrize("entry", ["127.0.0.0/8", "::1", "169.254.169.254/32", "169.254.0.0/16", "fe80::/64"])
def test_production_refuses_allow_list_entries_that_reach_its_own_host(
    entry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("C2D_HOME", str(tmp_path))
    with pytest.raises(ValidationError, match="refused in production"):
        ProviderSettings(environment="production", private_key=SecretStr(OWN_KEY), fetch_allow=[entry])
    # Development accepts it (the stack's loopback origins), and production a private network.
    assert ProviderSettings(fetch_allow=[entry]).fetch_allow == [entry]
    production = ProviderSettings(
        environment="production",
        private_key=SecretStr(OWN_KEY),
        fetch_allow=["10.20.0.0/16", "minio.internal"],
    )
    assert decision(production.net_policy, "10.20.3.4") == "allowed"
    assert decision(production.net_policy, "10.21.0.1") == "refused"
