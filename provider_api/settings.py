"""Provider settings, read from `PROVIDER_*` environment variables; unsafe values refuse to start.

Development runs against anvil with a key derived from anvil's public test mnemonic. Production needs
its own key: a missing key, or any key of that public mnemonic, stops the Provider at start-up.
"""

from __future__ import annotations

from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from c2d_core.settings import EngineSettings, engine_settings

if TYPE_CHECKING:
    from c2d_core.fetch import SourceSettings
    from c2d_core.netguard import NetPolicy

MIB = 1024**2
# The status cache's defaults (PROVIDER_STATUS_CACHE_SECONDS / _ENTRIES below), also DagsterJobs' own
# when it is built without settings (tests, benches): one place to change them.
STATUS_CACHE_SECONDS = 1.0
STATUS_CACHE_ENTRIES = 10_000

# Anvil's (and Hardhat's) default mnemonic: public, so every key derived from it is public too.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
# How many of its accounts count as known: anvil creates 10 by default; scripts often ask for more.
KNOWN_DEV_ACCOUNTS = 30
# The development Provider uses the last of anvil's 10 default accounts, away from the deployer (0)
# and the accounts tests use as publishers and consumers.
PROVIDER_DEV_ACCOUNT_INDEX = 9


@cache
def anvil_dev_key(index: int) -> str:
    """The 0x-hex private key of account `index` of anvil's public mnemonic (m/44'/60'/0'/0/index)."""
    seed = _anvil_seed()
    return "0x" + key_from_seed(seed, f"m/44'/60'/0'/0/{index}").hex()


@cache
def _anvil_seed() -> bytes:
    return seed_from_mnemonic(ANVIL_MNEMONIC, "")


@cache
def known_dev_keys() -> frozenset[str]:
    return frozenset(anvil_dev_key(index)[2:] for index in range(KNOWN_DEV_ACCOUNTS))


def _normalised_key(value: str) -> str:
    text = value.strip().lower().removeprefix("0x")
    if len(text) != 64 or any(char not in "0123456789abcdef" for char in text):
        raise ValueError("the private key must be 32 bytes as 64 hex characters (0x prefix optional)")
    return text


def _engine() -> EngineSettings:
    return engine_settings()


def _default_nonce_db_url() -> str:
    return f"sqlite:///{_engine().home / 'provider.db'}"


def _default_environments_file() -> Path:
    return _engine().environments_file


def _default_results_dir() -> Path:
    return _engine().resolved_results_dir


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVIDER_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    # Signs provider fees and decrypts DDO files. Development: anvil account 9 when unset.
    private_key: SecretStr | None = None
    chain_id: int = Field(default=8996, ge=1)
    rpc_url: str = "http://127.0.0.1:8545"
    # Seconds one chain RPC call may take. A node that hangs (overloaded, stopped) fails the request
    # with a 503 after this long instead of holding it for web3's default; eth_getLogs on a busy
    # public node can take a few seconds, so keep it well above a local node's milliseconds.
    rpc_timeout: float = Field(default=10.0, gt=0, le=300)
    addresses_file: Path | None = None
    # Dagster's GraphQL endpoint: where the Provider submits and stops runs (writes only).
    graphql_url: str = "http://127.0.0.1:3300/graphql"
    # The Dagster instance folder (its dagster.yaml names the run storage: SQLite files beside it, or
    # Postgres through dagster-postgres) whose run storage the Provider reads job state from, through
    # Dagster's storage API, never the webserver. Unset: $DAGSTER_HOME.
    dagster_home: Path | None = None
    # Seconds an unfinished job's status (and a job list, an environment's counts) is answered from
    # memory before run storage is read again; finished jobs are kept until their results expire
    # (provider_api.dagster_jobs). 0 reads run storage on every request.
    status_cache_seconds: float = Field(default=STATUS_CACHE_SECONDS, ge=0, le=60)
    # Reads each Provider process keeps (least recently used out); a finished job is a few kB.
    status_cache_entries: int = Field(default=STATUS_CACHE_ENTRIES, ge=1, le=1_000_000)
    # SQLAlchemy URL of the nonce store: SQLite embedded, `postgresql+psycopg2://...` in production.
    nonce_db_url: str = Field(default_factory=_default_nonce_db_url)
    environments_file: Path = Field(default_factory=_default_environments_file)
    results_dir: Path = Field(default_factory=_default_results_dir)
    # The Provider's own public URL (what DDOs name as serviceEndpoint).
    url: str = "http://127.0.0.1:8030"
    # fileinfo computes a content checksum only for files up to this size (Ocean: MAX_CHECKSUM_LENGTH).
    max_checksum_bytes: int = Field(default=10 * MIB, ge=0)
    # Who may call /decrypt. Empty means nobody: decrypting documents for anyone who signs would
    # hand out whatever was encrypted to this key (Ocean allows everyone when its list is empty).
    allowed_decrypters: list[str] = Field(default_factory=list)
    # fileinfo and checksum fetches refuse private, loopback and link-local hosts unless this is on;
    # development turns it on to reach local test servers, production refuses it.
    allow_non_public_ip: bool = False
    # Host names and CIDRs fileinfo may reach although not public (a publisher's private network),
    # comma-separated; allowed in production, unlike allow_non_public_ip which opens everything.
    fetch_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ipfs_gateway: str = "https://ipfs.io"
    arweave_gateway: str = "https://arweave.net"

    @field_validator("fetch_allow", mode="before")
    @classmethod
    def _split_allow_list(cls, value: object) -> object:
        from c2d_core.netguard import split_allow_list

        return split_allow_list(value)

    @field_validator("allowed_decrypters")
    @classmethod
    def _decrypters(cls, value: list[str]) -> list[str]:
        bad = [item for item in value if not is_address(item)]
        if bad:
            raise ValueError(f"allowed_decrypters must be 0x addresses; not addresses: {bad}")
        return [to_checksum_address(item) for item in value]

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> ProviderSettings:
        if self.private_key is not None:
            key = _normalised_key(self.private_key.get_secret_value())
            self.private_key = SecretStr("0x" + key)
        if self.environment == "production":
            if self.private_key is None:
                raise ValueError(
                    "PROVIDER_PRIVATE_KEY is required in production (the key that signs provider fees)"
                )
            if self.private_key.get_secret_value()[2:] in known_dev_keys():
                raise ValueError(
                    "PROVIDER_PRIVATE_KEY is a key of anvil's public test mnemonic: anyone can sign "
                    "as it. Use a key of your own in production."
                )
            if self.allow_non_public_ip:
                raise ValueError(
                    "PROVIDER_ALLOW_NON_PUBLIC_IP is refused in production: it lets requests reach "
                    "the Provider's own network (SSRF)"
                )
        elif self.private_key is None:
            self.private_key = SecretStr(anvil_dev_key(PROVIDER_DEV_ACCOUNT_INDEX))
        from c2d_core.netguard import NetPolicy

        # Checks the entries; `*` and friends are refused in production like allow_non_public_ip.
        policy = NetPolicy.from_allow_list(
            self.fetch_allow, allow_everything=self.environment != "production"
        )
        host_local = policy.host_local_entries()
        if self.environment == "production" and host_local:
            raise ValueError(
                f"PROVIDER_FETCH_ALLOW entries {host_local} reach the Provider's own host (loopback) or "
                "the cloud metadata address (link-local) and are refused in production; allow the "
                "private hosts or networks the data is on instead"
            )
        return self

    @cached_property
    def net_policy(self) -> NetPolicy:
        """Where fileinfo and checksum fetches may go (c2d_core.netguard)."""
        from c2d_core.netguard import NetPolicy

        entries = [*self.fetch_allow, *(["*"] if self.allow_non_public_ip else [])]
        return NetPolicy.from_allow_list(entries, allow_everything=self.environment != "production")

    @property
    def sources(self) -> SourceSettings:
        from c2d_core.fetch import SourceSettings

        return SourceSettings(ipfs_gateway=self.ipfs_gateway, arweave_gateway=self.arweave_gateway)

    @property
    def private_key_hex(self) -> str:
        """The private key as 0x-hex; read it only where it is used (signing, decrypting)."""
        assert self.private_key is not None  # set by the validator in every environment
        return self.private_key.get_secret_value()

    @cached_property
    def account(self) -> LocalAccount:
        return Account.from_key(self.private_key_hex)

    @property
    def address(self) -> str:
        return str(self.account.address)
