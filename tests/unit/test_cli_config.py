"""Where the `c2d` commands take their settings from: flags, then C2D_* variables, then a config file,
then the embedded stack's stack.json; which key signs; and that no key is ever shown."""

import json
from pathlib import Path

import pytest

from c2d_cli.config import ConfigError, resolve
from c2d_core.chain import dev_account

KEY = "0x" + "4c" * 32
OTHER_KEY = "0x" + "5d" * 32


def write_stack(home: Path, chain_id: int = 8996) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    stack = {
        "home": str(home),
        "dagster_home": str(home),
        "webserver_url": "http://127.0.0.1:3300",
        "webserver_host": "127.0.0.1",
        "webserver_port": 3300,
        "webserver_pid": 0,
        "daemon_pid": 0,
        "started_at": 0.0,
        "provider_url": "http://127.0.0.1:8030",
        "rpc_url": "http://127.0.0.1:8545",
        "chain_id": chain_id,
        "addresses_file": str(home / "addresses.json"),
    }
    (home / "stack.json").write_text(json.dumps(stack))
    return home


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A working folder with no config file and no stack."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def resolved(place: Path, environ: dict[str, str] | None = None, **flags):
    env = {"HOME": str(place.parent / "home"), **(environ or {})}
    return resolve(role=flags.pop("role", "consumer"), environ=env, cwd=place, **flags)


def test_the_embedded_stack_is_the_fallback_with_its_dev_accounts(place: Path) -> None:
    write_stack(place / ".c2d")
    consumer = resolved(place)
    assert consumer.provider_url == "http://127.0.0.1:8030"
    assert consumer.rpc_url == "http://127.0.0.1:8545" and consumer.chain_id == 8996
    assert consumer.source_of("provider_url").endswith("stack.json")
    assert consumer.embedded_provider
    assert consumer.account().address == dev_account(2).address
    assert "account 2" in consumer.key_description
    assert resolved(place, role="publisher").account().address == dev_account(1).address
    assert resolved(place, account=5).account().address == dev_account(5).address


def test_flags_beat_variables_beat_the_config_file_beat_the_stack(place: Path) -> None:
    write_stack(place / ".c2d")
    (place / ".c2d" / "cli.toml").write_text(
        'provider_url = "http://file.example:1"\nrpc_url = "http://file.example:2"\nchain_id = 8996\n'
    )
    from_file = resolved(place)
    assert from_file.provider_url == "http://file.example:1"
    assert from_file.source_of("provider_url") == str(place / ".c2d" / "cli.toml")
    assert not from_file.embedded_provider  # the stack's key must not read another Provider's DDOs

    env = {"C2D_PROVIDER_URL": "http://env.example:1/", "C2D_CHAIN_ID": "8996"}
    from_env = resolved(place, env)
    assert from_env.provider_url == "http://env.example:1"  # trailing slash dropped
    assert from_env.source_of("provider_url") == "C2D_PROVIDER_URL"
    assert from_env.rpc_url == "http://file.example:2"  # each setting falls back on its own

    from_flag = resolved(place, env, provider_url="http://flag.example:1")
    assert from_flag.provider_url == "http://flag.example:1"
    assert from_flag.source_of("provider_url") == "--provider-url"


def test_the_user_config_file_is_found_under_xdg_config_home(place: Path, tmp_path: Path) -> None:
    config_dir = tmp_path / "xdg" / "c2d"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text('provider_url = "https://provider.example.org"\n')
    config = resolved(place, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert config.provider_url == "https://provider.example.org"
    assert config.config_file == config_dir / "config.toml"


def test_c2d_config_names_the_file_and_must_exist(place: Path, tmp_path: Path) -> None:
    chosen = tmp_path / "mine.toml"
    chosen.write_text('rpc_url = "http://rpc.example:8545"\n')
    assert resolved(place, {"C2D_CONFIG": str(chosen)}).rpc_url == "http://rpc.example:8545"
    with pytest.raises(ConfigError, match="not a file"):
        resolved(place, {"C2D_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f'private_key = "{KEY}"\n', "holds a private_key"),
        ('provider = "http://x"\n', "unknown settings: provider"),
        ("provider_url = \n", "not valid TOML"),
        ('provider_url = "ftp://x"\n', "not an http"),
        ('chain_id = "mainnet"\n', "not a number"),
    ],
)
def test_a_bad_config_file_is_refused_with_the_reason(place: Path, content: str, message: str) -> None:
    (place / ".c2d").mkdir()
    (place / ".c2d" / "cli.toml").write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        resolved(place)
    assert KEY not in str(caught.value) + caught.value.hint


def test_key_sources_in_order_and_never_shown(place: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(OTHER_KEY + "\n")
    file_key = tmp_path / "file-key"
    file_key.write_text(KEY)
    (place / ".c2d").mkdir()
    (place / ".c2d" / "cli.toml").write_text(f'chain_id = 1\nkey_file = "{file_key}"\n')
    assert "key_file in" in resolved(place).key_description
    from_env = resolved(place, {"C2D_PRIVATE_KEY": KEY, "C2D_KEY_FILE": str(key_file)})
    assert from_env.key_description == "C2D_PRIVATE_KEY"
    assert KEY not in repr(from_env) and KEY.removeprefix("0x") not in repr(from_env)
    assert resolved(place, {"C2D_KEY_FILE": str(key_file)}).account().key.hex().endswith("5d" * 32)
    flagged = resolved(place, {"C2D_PRIVATE_KEY": KEY}, key_file=key_file)
    assert flagged.key_description == f"--key-file {key_file}"


def test_a_malformed_key_is_refused_without_echoing_it(place: Path) -> None:
    write_stack(place / ".c2d")
    almost = "0x" + "4c" * 31 + "zz"
    config = resolved(place, {"C2D_PRIVATE_KEY": almost})
    with pytest.raises(ConfigError) as caught:
        config.account()
    assert "C2D_PRIVATE_KEY" in caught.value.message and almost not in caught.value.message


def test_dev_accounts_only_on_the_local_chain(place: Path) -> None:
    with pytest.raises(ConfigError, match="local chain"):
        resolved(place, chain_id=137, account=3)
    # No key and no local chain: the command fails only when it needs to sign.
    config = resolved(place, provider_url="https://provider.example.org", chain_id=137)
    with pytest.raises(ConfigError, match="no key is configured") as caught:
        config.account()
    assert "--key-file" in caught.value.hint
    with pytest.raises(ConfigError, match="both name a key"):
        resolved(place, key_file=Path("k"), account=1)


def test_missing_settings_say_how_to_set_them(place: Path) -> None:
    config = resolved(place)
    assert config.provider_url is None and config.key is None
    with pytest.raises(ConfigError) as caught:
        config.require_provider()
    assert "C2D_PROVIDER_URL" in caught.value.hint and "c2d dev up" in caught.value.hint
    with pytest.raises(ConfigError, match="RPC"):
        config.require_rpc()


def test_c2d_home_points_at_another_stack(place: Path, tmp_path: Path) -> None:
    write_stack(tmp_path / "elsewhere" / ".c2d", chain_id=8996)
    config = resolved(place, {"C2D_HOME": str(tmp_path / "elsewhere" / ".c2d")})
    assert config.provider_url == "http://127.0.0.1:8030"
    assert config.stack_home == tmp_path / "elsewhere" / ".c2d"
    assert resolved(place, home=tmp_path / "elsewhere" / ".c2d").provider_url == "http://127.0.0.1:8030"
