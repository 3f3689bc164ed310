"""Where the `c2d` commands connect and with which key: flags, then `C2D_*` environment variables, then
a config file, then the embedded stack's `.c2d/stack.json`.

Each value remembers where it came from, so an error can say which setting to fix. A private key is
read only when a command signs or pays, is held by its `LocalAccount` alone, and is never printed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_core.chain import Chain

Role = Literal["consumer", "publisher", "reader"]

# anvil's public test accounts the embedded stack uses for each role (account 9 is the Provider's).
DEV_ROLE_ACCOUNTS: Mapping[str, int] = {"publisher": 1, "consumer": 2}
DEV_ACCOUNTS = 10

ENV_PROVIDER_URL = "C2D_PROVIDER_URL"
ENV_RPC_URL = "C2D_RPC_URL"
ENV_CHAIN_ID = "C2D_CHAIN_ID"
ENV_ADDRESSES_FILE = "C2D_ADDRESSES_FILE"
ENV_PRIVATE_KEY = "C2D_PRIVATE_KEY"
ENV_KEY_FILE = "C2D_KEY_FILE"
ENV_CONFIG = "C2D_CONFIG"
ENV_HOME = "C2D_HOME"

PROJECT_CONFIG = Path(".c2d") / "cli.toml"
USER_CONFIG = Path("c2d") / "config.toml"
# A config file names a key file, never a key: config files get copied, pasted and committed.
CONFIG_KEYS = ("provider_url", "rpc_url", "chain_id", "addresses_file", "key_file")

PANEL = "Connection (flags, then C2D_* variables, then the config file, then .c2d/stack.json)"

ProviderUrlOption = Annotated[
    str | None,
    typer.Option(
        "--provider-url",
        help=f"The Provider's URL (env {ENV_PROVIDER_URL}).",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]
RpcUrlOption = Annotated[
    str | None,
    typer.Option(
        "--rpc-url",
        help=f"The chain's JSON-RPC URL (env {ENV_RPC_URL}).",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]
ChainIdOption = Annotated[
    int | None,
    typer.Option(
        "--chain-id",
        help=f"The chain id, checked against the RPC (env {ENV_CHAIN_ID}).",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help=f"A file holding your hex private key (env {ENV_KEY_FILE}; or the key in {ENV_PRIVATE_KEY}).",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]
AccountOption = Annotated[
    int | None,
    typer.Option(
        "--account",
        min=0,
        max=DEV_ACCOUNTS - 1,
        help="Local chain only: act as anvil test account N (default: 2 for a consumer, 1 for a publisher).",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help=f"State folder of the embedded stack, whose stack.json is the last fallback (env {ENV_HOME}; "
        "default ./.c2d, else the stack `c2d dev up` last started).",
        rich_help_panel=PANEL,
        show_default=False,
    ),
]


class ConfigError(Exception):
    """A setting is missing or wrong; `hint` says how to set it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class KeyChoice:
    """Which key signs: a dev account index, a key file, or the key in an environment variable.

    Holds no key material except `_env_key`, which `repr` leaves out.
    """

    source: str
    dev_account: int | None = None
    key_file: Path | None = None
    _env_key: str | None = field(default=None, repr=False)

    def load(self) -> LocalAccount:
        from eth_account import Account

        if self.dev_account is not None:
            from c2d_core.chain import dev_account

            return dev_account(self.dev_account)
        if self.key_file is not None:
            try:
                text = self.key_file.expanduser().read_text().strip()
            except OSError as error:
                raise ConfigError(
                    f"cannot read the key file {self.key_file} ({self.source}): {error.strerror}",
                    "give a readable file holding one hex private key",
                ) from None
        else:
            text = (self._env_key or "").strip()
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
            # Never echo what was read: it may be a key with a typo.
            raise ConfigError(
                f"the private key from {self.source} is not 64 hex digits (with or without 0x)",
                "the key is a secp256k1 private key in hex, as wallets export it",
            )
        return Account.from_key(text)


@dataclass(frozen=True)
class CliConfig:
    provider_url: str | None
    rpc_url: str | None
    chain_id: int | None
    addresses_file: Path | None
    key: KeyChoice | None
    # Setting name → where its value came from ("--provider-url", "C2D_RPC_URL", "<file>", "<stack.json>").
    sources: Mapping[str, str]
    config_file: Path | None = None
    stack_home: Path | None = None
    embedded_provider: bool = False
    key_problem: ConfigError | None = None

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "nowhere")

    def require_provider(self) -> str:
        if not self.provider_url:
            raise ConfigError(
                "no Provider URL is configured",
                f"pass --provider-url, set {ENV_PROVIDER_URL}, write provider_url in {PROJECT_CONFIG} or "
                "~/.config/c2d/config.toml, or use the local stack: start it with `c2d dev up`, or point at "
                f"a running one with --home DIR or {ENV_HOME}=DIR",
            )
        return self.provider_url

    def require_rpc(self) -> str:
        if not self.rpc_url:
            raise ConfigError(
                "no chain RPC URL is configured",
                f"pass --rpc-url, set {ENV_RPC_URL}, write rpc_url in a config file, or use the local "
                "stack: start it with `c2d dev up`, or point at a running one with --home DIR or "
                f"{ENV_HOME}=DIR",
            )
        return self.rpc_url

    def account(self) -> LocalAccount:
        if self.key is None:
            raise self.key_problem or ConfigError("no key is configured")
        return self.key.load()

    @property
    def key_description(self) -> str:
        """Where the key comes from, for messages; never the key."""
        return self.key.source if self.key else "no key"

    def connect_chain(self) -> Chain:
        """The chain, with Ocean's contract addresses for it (own file, or the ocean-contracts wheel's)."""
        from c2d_core.chain import Chain

        addresses = self.addresses_file or bundled_addresses_file()
        chain = Chain.connect(self.require_rpc(), None, self.chain_id, timeout=15.0)
        if addresses is not None:
            from c2d_core.chain import ChainError, read_addresses

            try:
                chain.addresses = read_addresses(addresses, chain_id=chain.chain_id)
            except ChainError:
                if self.addresses_file is not None:
                    raise
        return chain

    @property
    def provider_key_file(self) -> Path | None:
        """The embedded stack's provider key, which can read the stack's encrypted DDOs (never printed)."""
        if not self.embedded_provider or self.stack_home is None:
            return None
        from c2d_core.settings import EngineSettings

        path = EngineSettings(home=self.stack_home).resolved_provider_key_file
        return path if path.exists() else None


def bundled_addresses_file() -> Path | None:
    """Ocean's published contract addresses, shipped in the `ocean-contracts` wheel."""
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution("ocean-contracts").locate_file("addresses/address.json")))
    except metadata.PackageNotFoundError:
        return None
    return path if path.exists() else None


def config_file_path(environ: Mapping[str, str], cwd: Path) -> Path | None:
    """$C2D_CONFIG, else ./.c2d/cli.toml, else $XDG_CONFIG_HOME/c2d/config.toml (~/.config/...)."""
    if environ.get(ENV_CONFIG):
        path = Path(environ[ENV_CONFIG]).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV_CONFIG} names {path}, which is not a file")
        return path
    project = cwd / PROJECT_CONFIG
    if project.is_file():
        return project
    base = Path(environ.get("XDG_CONFIG_HOME") or Path(environ.get("HOME", "~")).expanduser() / ".config")
    user = base / USER_CONFIG
    return user if user.is_file() else None


def read_config_file(path: Path) -> dict[str, object]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}") from None
    if "private_key" in document:
        raise ConfigError(
            f"the config file {path} holds a private_key",
            'move the key to a file readable only by you and write key_file = "<path>" instead',
        )
    unknown = sorted(set(document) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"the config file {path} has unknown settings: {', '.join(unknown)}",
            f"allowed: {', '.join(CONFIG_KEYS)}",
        )
    return document


def _url(value: str, what: str, source: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(f"the {what} {value!r} from {source} is not an http(s) URL")
    return value.rstrip("/")


def _chain_id(value: object, source: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"the chain id {value!r} from {source} is not a number") from None
    if number <= 0:
        raise ConfigError(f"the chain id {number} from {source} must be positive")
    return number


def resolve(
    *,
    role: Role,
    provider_url: str | None = None,
    rpc_url: str | None = None,
    chain_id: int | None = None,
    key_file: Path | None = None,
    account: int | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> CliConfig:
    """The configuration of one command; `role` picks the embedded stack's default account."""
    from c2d_cli.stack_paths import STACK_FILE, find_stack_home, read_stack_json

    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    if key_file is not None and account is not None:
        raise ConfigError("--key-file and --account both name a key", "give one of them")

    config_path = config_file_path(environ, cwd)
    file_values = read_config_file(config_path) if config_path else {}
    stack_home, _how = find_stack_home(home, environ, cwd)
    running = read_stack_json(stack_home)
    stack_source = f"{stack_home / STACK_FILE}"
    stack_values: dict[str, object] = {}
    if running is not None:
        stack_values = {
            name: running.get(name) for name in ("provider_url", "rpc_url", "chain_id", "addresses_file")
        }

    flags = {"provider_url": provider_url, "rpc_url": rpc_url, "chain_id": chain_id}
    flag_names = {"provider_url": "--provider-url", "rpc_url": "--rpc-url", "chain_id": "--chain-id"}
    env_names = {
        "provider_url": ENV_PROVIDER_URL,
        "rpc_url": ENV_RPC_URL,
        "chain_id": ENV_CHAIN_ID,
        "addresses_file": ENV_ADDRESSES_FILE,
    }
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name in ("provider_url", "rpc_url", "chain_id", "addresses_file"):
        candidates: list[tuple[object, str]] = []
        if flags.get(name) is not None:
            candidates.append((flags[name], flag_names[name]))
        if environ.get(env_names[name]):
            candidates.append((environ[env_names[name]], env_names[name]))
        if file_values.get(name) not in (None, ""):
            candidates.append((file_values[name], str(config_path)))
        if stack_values.get(name) not in (None, ""):
            candidates.append((stack_values[name], stack_source))
        if candidates:
            values[name], sources[name] = candidates[0]

    resolved_provider = (
        _url(str(values["provider_url"]), "Provider URL", sources["provider_url"])
        if "provider_url" in values
        else None
    )
    resolved_rpc = (
        _url(str(values["rpc_url"]), "RPC URL", sources["rpc_url"]) if "rpc_url" in values else None
    )
    resolved_chain = _chain_id(values["chain_id"], sources["chain_id"]) if "chain_id" in values else None
    addresses = Path(str(values["addresses_file"])).expanduser() if "addresses_file" in values else None
    embedded = running is not None and resolved_provider == str(running.get("provider_url") or "").rstrip("/")

    key, problem = _choose_key(
        role=role,
        key_file=key_file,
        account=account,
        environ=environ,
        file_key=file_values.get("key_file"),
        config_path=config_path,
        chain_id=resolved_chain,
        chain_source=sources.get("chain_id", ""),
    )
    if key is not None:
        sources["key"] = key.source
    return CliConfig(
        provider_url=resolved_provider,
        rpc_url=resolved_rpc,
        chain_id=resolved_chain,
        addresses_file=addresses,
        key=key,
        sources=sources,
        config_file=config_path,
        stack_home=stack_home if running is not None else None,
        embedded_provider=embedded,
        key_problem=problem,
    )


def _choose_key(
    *,
    role: Role,
    key_file: Path | None,
    account: int | None,
    environ: Mapping[str, str],
    file_key: object,
    config_path: Path | None,
    chain_id: int | None,
    chain_source: str,
) -> tuple[KeyChoice | None, ConfigError | None]:
    """The key to sign with, or why there is none (raised only when a command needs one)."""
    from c2d_core.chain import DEV_CHAIN_ID

    dev_chain = chain_id == DEV_CHAIN_ID
    if account is not None:
        if not dev_chain:
            where = f"chain {chain_id} (from {chain_source})" if chain_id else "an unknown chain"
            raise ConfigError(
                f"--account picks one of anvil's public test accounts, which belong on the local chain "
                f"(id {DEV_CHAIN_ID}) only; this is {where}",
                f"use --key-file or {ENV_PRIVATE_KEY} / {ENV_KEY_FILE} for your own key",
            )
        return KeyChoice(source=f"anvil test account {account} (--account)", dev_account=account), None
    if key_file is not None:
        return KeyChoice(source=f"--key-file {key_file}", key_file=key_file), None
    if environ.get(ENV_PRIVATE_KEY):
        return KeyChoice(source=ENV_PRIVATE_KEY, _env_key=environ[ENV_PRIVATE_KEY]), None
    if environ.get(ENV_KEY_FILE):
        path = Path(environ[ENV_KEY_FILE])
        return KeyChoice(source=f"{ENV_KEY_FILE} ({path})", key_file=path), None
    if isinstance(file_key, str) and file_key:
        path = Path(file_key).expanduser()
        if not path.is_absolute() and config_path is not None:
            path = config_path.parent / path
        return KeyChoice(source=f"key_file in {config_path}", key_file=path), None
    if dev_chain and role in DEV_ROLE_ACCOUNTS:
        index = DEV_ROLE_ACCOUNTS[role]
        return KeyChoice(
            source=f"anvil test account {index}, the local chain's default {role}", dev_account=index
        ), None
    return None, ConfigError(
        "no key is configured to sign with",
        f"pass --key-file, set {ENV_KEY_FILE} or {ENV_PRIVATE_KEY}, or write key_file in a config file; "
        f"on the local stack its test accounts sign: start it with `c2d dev up`, or point at a running "
        f"one with --home DIR or {ENV_HOME}=DIR",
    )
