"""ProviderSettings: the development default key, and the refusals that keep it out of production."""

from pathlib import Path

import pytest
from eth_account import Account
from pydantic import SecretStr, ValidationError

from provider_api.settings import ANVIL_MNEMONIC, ProviderSettings, anvil_dev_key

OWN_KEY = "0x" + "4c" * 32


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENVIRONMENT", "PRIVATE_KEY", "ALLOW_NON_PUBLIC_IP", "ALLOWED_DECRYPTERS", "NONCE_DB_URL"):
        monkeypatch.delenv(f"PROVIDER_{name}", raising=False)
    monkeypatch.setenv("C2D_HOME", str(tmp_path / "home"))


def test_anvil_keys_are_derived_from_the_public_mnemonic() -> None:
    Account.enable_unaudited_hdwallet_features()
    for index in (0, 9):
        expected = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
        assert anvil_dev_key(index) == expected.key.to_0x_hex()
    # anvil's well-known first account
    assert Account.from_key(anvil_dev_key(0)).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_development_defaults_to_anvil_account_9(tmp_path: Path) -> None:
    settings = ProviderSettings()
    assert settings.environment == "development"
    assert settings.address == "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
    assert settings.private_key_hex == anvil_dev_key(9)
    assert settings.nonce_db_url == f"sqlite:///{tmp_path / 'home' / 'provider.db'}"
    assert settings.chain_id == 8996 and settings.max_checksum_bytes == 10 * 1024 * 1024
    # The key never shows in the settings' text form (logs, tracebacks).
    assert anvil_dev_key(9)[2:] not in repr(settings) and anvil_dev_key(9)[2:] not in str(settings)


def test_production_requires_a_key() -> None:
    with pytest.raises(ValidationError, match="PROVIDER_PRIVATE_KEY is required in production"):
        ProviderSettings(environment="production")


@pytest.mark.parametrize("index", [0, 1, 9, 25])
def test_production_refuses_any_key_of_the_public_mnemonic(index: int) -> None:
    key = anvil_dev_key(index)
    for spelling in (key, key[2:], key.upper().replace("0X", "0x"), f"  {key}  "):
        with pytest.raises(ValidationError, match="anvil's public test mnemonic"):
            ProviderSettings(environment="production", private_key=SecretStr(spelling))


def test_production_accepts_its_own_key_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_ENVIRONMENT", "production")
    monkeypatch.setenv("PROVIDER_PRIVATE_KEY", OWN_KEY[2:])
    settings = ProviderSettings()
    assert settings.private_key_hex == OWN_KEY
    assert settings.address == Account.from_key(OWN_KEY).address


def test_production_refuses_non_public_fetches() -> None:
    with pytest.raises(ValidationError, match="ALLOW_NON_PUBLIC_IP is refused in production"):
        ProviderSettings(environment="production", private_key=SecretStr(OWN_KEY), allow_non_public_ip=True)
    assert ProviderSettings(allow_non_public_ip=True).allow_non_public_ip


@pytest.mark.parametrize("bad", ["0x1234", "zz" * 32, "0x" + "ab" * 33])
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="64 hex characters"):
        ProviderSettings(private_key=SecretStr(bad))


def test_allowed_decrypters_are_checksummed_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    lower = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    monkeypatch.setenv("PROVIDER_ALLOWED_DECRYPTERS", f'["{lower}"]')
    assert ProviderSettings().allowed_decrypters == ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"]
    with pytest.raises(ValidationError, match="must be 0x addresses"):
        ProviderSettings(allowed_decrypters=["not-an-address"])
