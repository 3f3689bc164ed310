"""Engine settings: one tree read from `C2D_*` environment variables (pydantic-settings).

`EngineSettings` holds the flat settings and three sub-models, each read from the variables that
share its prefix: `.s3` (`C2D_S3_*`), `.k8s` (`C2D_K8S_*`) and `.sandbox` (`C2D_SANDBOX_*`); the names
are the ones the Helm chart and the docs have always used. Code reads the tree through
`engine_settings()`, read once and again only when the `C2D_*` environment changes.

The embedded default keeps everything under one project-local folder, `.c2d/` (`C2D_HOME`), which is
also Dagster's `DAGSTER_HOME`. Nothing in that folder is ever visible inside an algorithm sandbox.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from c2d_core.s3 import S3Settings

MIB = 1024**2
ENV_PREFIX = "C2D_"
DEFAULT_WATCHDOG_INTERVAL = 15


def _default_home() -> Path:
    return Path.cwd() / ".c2d"


class K8sSettings(BaseModel):
    """`C2D_K8S_*`: where job pods run and how; the chart sets each from `jobs:` in values.yaml."""

    namespace: str = "c2d-jobs"
    storage_class: str | None = None
    access_mode: str = "ReadWriteOnce"
    # JSON objects: {"provider-key": "<Secret name>"} and {"<host folder>": "<PVC name>"}.
    secret_names: dict[str, str] = Field(default_factory=lambda: {"provider-key": "c2d-provider-key"})
    shared_claims: dict[str, str] = Field(default_factory=dict)
    service_account_name: str | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    run_as_user: int = Field(default=1000, ge=1)
    run_as_group: int = Field(default=1000, ge=1)
    algorithm_read_only_root: bool = True
    tmp_bytes: int = Field(default=256 * MIB, ge=MIB)
    start_timeout: float = Field(default=300.0, gt=0, description="seconds to schedule and pull")
    poll_interval: float = Field(default=2.0, gt=0)
    deadline_grace: float = Field(default=60.0, ge=0)
    ttl_seconds_after_finished: int = Field(default=600, ge=0)
    keep_finished_jobs: bool = False
    release_name: str = "c2d"
    # The cleanup sensor leaves a volume alone this long after its run ended (operators may look).
    cleanup_grace_seconds: int = Field(default=900, ge=0)


class SandboxSettings(BaseModel):
    """`C2D_SANDBOX_*`: the local bubblewrap sandbox."""

    # Each concurrently running pod takes its own uid, so per-uid limits stay per job.
    uid_base: int = Field(default=61000, ge=1000)
    slots: int = Field(default=32, ge=1, le=1000)
    # Pod cgroups (c2d_core.sandbox_cgroups): `auto` picks v1 or v2 from the host's mount table; a root
    # (a cgroup2 mount or a subtree delegated to the engine, or the folder of v1 controller mounts)
    # says where instead. `none` leaves only rlimits (no CPU limit).
    cgroups: Literal["auto", "v1", "v2", "none"] = "auto"
    cgroup_root: Path | None = None


class EngineSettings(BaseSettings):
    # `C2D_S3_BUCKET` is `.s3.bucket`: one split after the prefix, so the flat names stay as they were.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="_", env_nested_max_split=1, extra="ignore"
    )

    deployment: Literal["local", "k8s"] = "local"
    home: Path = Field(default_factory=_default_home)
    environments_file: Path = Path(__file__).resolve().parent.parent / "config" / "environments.yaml"
    # Where the result store and the per-job work dirs live in the embedded default.
    results_dir: Path | None = None
    work_dir: Path | None = None
    # The image of the configure and publish pods; locally it maps to this project's own interpreter.
    pod_image: str = "c2d-pod:latest"
    # Stage deadlines: Ocean has none for configure and publish, which is how jobs hang forever.
    configure_deadline: int = Field(default=900, ge=1, description="seconds")
    publish_deadline: int = Field(default=600, ge=1, description="seconds")
    # Queue wait limit: a job still queued this long after its start ends with status 2 "Job expired
    # in queue" (c2d_defs.queue_watchdog). 0 means jobs wait as long as the queue needs.
    max_queue_wait: int = Field(default=0, ge=0, description="seconds")
    # How often the watchdog sensors look at the queue and the running jobs (Dagster sensor interval).
    watchdog_interval: int = Field(default=DEFAULT_WATCHDOG_INTERVAL, ge=1, le=3600, description="seconds")
    # Slack on top of every stage deadline before the stage watchdog ends a job that has not moved,
    # and on top of the whole job's deadlines in its run's `dagster/max_runtime`: the pods' own
    # deadlines fire first, the watchdog only catches a job whose run worker hung or died.
    watchdog_grace: int = Field(default=120, ge=0, description="seconds")
    # Dagster run monitoring's poll interval written into the rendered instance file (`c2d dev up`);
    # unset keeps the file's. Tests set it low so a dead run worker is noticed within seconds.
    run_monitoring_interval: int | None = Field(default=None, ge=1, description="seconds")
    # Input fetching (configure pod).
    max_input_bytes: int = Field(default=1024 * MIB, ge=1)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    fetch_retries: int = Field(default=3, ge=0, le=10)
    # SSRF guard: fetches reach public addresses only, plus these host names and CIDRs (comma-separated,
    # e.g. `C2D_FETCH_ALLOW=127.0.0.0/8,minio.internal`). Empty by default; `*` (everything) only locally.
    fetch_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Gateways for Ocean's `ipfs` and `arweave` file types.
    ipfs_gateway: str = "https://ipfs.io"
    arweave_gateway: str = "https://arweave.net"
    # Extensions (docs/extending.md): modules that register file sources, result stores or stages,
    # imported by the code location, the configure and publish pods and the Provider; and folders to
    # import them from (bound read-only into the local sandbox's pods). Comma-separated.
    extensions: Annotated[list[str], NoDecode] = Field(default_factory=list)
    extensions_path: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Results: a cap on outputs per job so one job cannot fill the store.
    max_output_files: int = Field(default=1000, ge=1)
    # Where results go: `local` (results_dir), `s3` (C2D_S3_*), `ipfs` (a kubo node's RPC API), or a
    # store an extension registered (c2d_core.result_stores.register_result_store).
    result_store: str = Field(default="local", min_length=1, max_length=40)
    s3: S3Settings = Field(default_factory=S3Settings)
    ipfs_api_url: str = ""
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    k8s: K8sSettings = Field(default_factory=K8sSettings)
    keep_work_dirs: bool = False
    # The key that decrypts the DDOs' encrypted `files` (in the configure pod) and, in the run worker,
    # signs the results-asset transactions; never mounted into a publish or algorithm pod.
    provider_key_file: Path | None = None
    # Plain file objects put dataset locations into run config (visible in the Dagster UI): allowed
    # only when a developer asks for it, never by default.
    allow_plain_files: bool = False
    # Refuse a compute run that carries no Provider stamp (c2d_core.run_stamp), e.g. one started from
    # the Dagster launchpad. A wrong stamp, a re-execution and a second run of a job id are refused
    # whatever this says. Turn it on where the run worker holds the Provider key file (it checks the
    # stamp with it); the chart does not yet mount the key into run pods unless resultsAssets is on.
    require_run_stamp: bool = False
    # Results published as a new Ocean asset (issue 8, c2d_core.result_assets): the run worker sends
    # the transactions with the provider key, so it needs the chain and the Provider's public URL (the
    # new asset's serviceEndpoint). Left empty, a job asking to publish ends 70 with the publication
    # recorded as failed.
    chain_rpc_url: str = ""
    chain_id: int | None = None
    addresses_file: Path | None = None
    provider_url: str = ""

    @field_validator("extensions", "extensions_path", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        from c2d_core.extensions import split_names

        if isinstance(value, dict):
            # C2D_EXTENSIONS_PATH alone also reads as `extensions.path` (the nested delimiter is "_"):
            # it names no module; `extensions_path` gets the variable under its own name.
            return []
        return split_names(value) if isinstance(value, str | list | tuple) else value

    @field_validator("fetch_allow", mode="before")
    @classmethod
    def _split_allow_list(cls, value: object) -> object:
        from c2d_core.netguard import split_allow_list

        return split_allow_list(value)

    @model_validator(mode="after")
    def _refuse_open_allow_list(self) -> EngineSettings:
        from c2d_core.netguard import NetPolicy

        # Validates every entry; an entry admitting all addresses is for a developer's machine only.
        NetPolicy.from_allow_list(self.fetch_allow, allow_everything=self.deployment == "local")
        return self

    @property
    def resolved_results_dir(self) -> Path:
        return self.results_dir or self.home / "results"

    @property
    def resolved_s3_credentials_file(self) -> Path:
        return self.s3.credentials_file or self.home / "secrets" / "s3-credentials"

    @property
    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.home / "jobs"

    @property
    def resolved_provider_key_file(self) -> Path:
        return self.provider_key_file or self.home / "secrets" / "provider-key"


def engine_settings() -> EngineSettings:
    """The process's settings, read from the environment once and again only when a `C2D_*` variable
    (or the working directory, the default home's parent) has changed since: call sites share one
    object instead of each parsing the environment, and a test that sets a variable sees it."""
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    return _settings_for(os.getcwd(), environment)


@functools.lru_cache(maxsize=4)
def _settings_for(cwd: str, environment: tuple[tuple[str, str], ...]) -> EngineSettings:
    return EngineSettings()


def clear_engine_settings() -> None:
    """Forget the settings read so far (the next `engine_settings()` reads the environment again)."""
    _settings_for.cache_clear()


def env_names() -> set[str]:
    """Every environment variable the settings tree reads (the Helm chart test holds the chart to it)."""
    names: set[str] = set()
    for name, field in EngineSettings.model_fields.items():
        kind: Any = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f"{ENV_PREFIX}{name}_{sub}".upper() for sub in kind.model_fields}
        else:
            names.add(f"{ENV_PREFIX}{name}".upper())
    return names
