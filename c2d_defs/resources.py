"""The resources a compute job runs with, one implementation per deployment.

`resources_by_deployment` in definitions.py picks them once from `C2D_DEPLOYMENT`; ops only see the
interfaces (a `PodRunner`, a `ResultStorage`, the environments) and never ask which mode they are in.
Each resource is configuration only: its fields are the settings (c2d_core.settings, shown as they are
in the Dagster UI, `dg.EnvVar` where the environment sets them) and `create_resource` hands the ops the
plain object when a run starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from c2d_core.environments import Environment, Environments
from c2d_core.result_stores import result_store_from_settings, result_store_kinds, result_store_type
from c2d_core.results import ResultStore
from c2d_core.s3 import S3Settings, s3_client
from c2d_core.settings import EngineSettings, engine_settings
from c2d_defs.pod_runner import Mount, PodRunner
from c2d_defs.pods import layout


def _setting(read: Callable[[EngineSettings], Any]) -> Any:
    """A field whose default is the engine setting's value, read when the resource is built (so the
    Dagster UI shows it), never an empty "read later"."""
    return Field(default_factory=lambda: read(engine_settings()))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def from_environment(name: str, value: str) -> str:
    """`dg.EnvVar(name)` when the code location's environment sets `name` (the UI names the variable
    and the run reads it then), else the setting's value."""
    return dg.EnvVar(name) if os.environ.get(name) else value


class ComputeEnvironments(dg.ConfigurableResource):
    """The compute environments file (`C2D_ENVIRONMENTS_FILE`)."""

    environments_file: str = _setting(lambda s: str(s.environments_file))

    @cached_property
    def _environments(self) -> Environments:
        return Environments.load(self.environments_file)

    def get(self, env_id: str) -> Environment:
        return self._environments.get(env_id)

    def load(self) -> Environments:
        return self._environments


class LocalPodRunnerResource(dg.ConfigurableResource):
    """Runs pods as bubblewrap sandboxes on this machine (the embedded default); hands the ops a
    `LocalPodRunner`."""

    work_dir: str = _setting(lambda s: str(s.resolved_work_dir))
    environments_file: str = _setting(lambda s: str(s.environments_file))
    pod_image: str = _setting(lambda s: s.pod_image)
    provider_key_file: str = _setting(lambda s: str(s.resolved_provider_key_file))
    s3_credentials_file: str = _setting(lambda s: str(s.resolved_s3_credentials_file))
    uid_base: int = _setting(lambda s: s.sandbox.uid_base)
    slots: int = _setting(lambda s: s.sandbox.slots)
    keep_work_dirs: bool = _setting(lambda s: s.keep_work_dirs)
    cgroups: str = _setting(lambda s: s.sandbox.cgroups)
    cgroup_root: str = _setting(lambda s: _text(s.sandbox.cgroup_root))

    def create_resource(self, context: dg.InitResourceContext) -> PodRunner:
        from c2d_defs.sandbox import LocalPodRunner

        # Secrets are files the run worker holds; each is mounted only when it exists at run start.
        files = {"provider-key": self.provider_key_file, "s3-credentials": self.s3_credentials_file}
        secrets = {name: Path(path) for name, path in files.items() if path and Path(path).exists()}
        return LocalPodRunner(
            work_dir=Path(self.work_dir),
            environments=Environments.load(self.environments_file),
            pod_image=self.pod_image,
            secrets=secrets,
            uid_base=self.uid_base,
            slots=self.slots,
            keep_work_dirs=self.keep_work_dirs,
            cgroup_root=Path(self.cgroup_root) if self.cgroup_root else None,
            cgroup_version=self.cgroups,  # type: ignore[arg-type]
        )


class ResultStorage:
    """What a result store resource hands the ops: the store, and how the publish pod reaches it."""

    def __init__(
        self,
        store: ResultStore,
        env: Mapping[str, str],
        secrets: Mapping[str, str] | None = None,
        *,
        network: bool = True,
        mount_root: Path | None = None,
    ) -> None:
        self.store = store
        self._env = dict(env)
        self._secrets = dict(secrets or {})
        self._mount_root = mount_root
        # Whether the publish pod needs the network (remote stores) or not (a mounted folder).
        self.publish_network = network

    def publish_mounts(self, job_id: str) -> list[Mount]:
        """The job's folder of a local store, mounted into the publish pod; none for remote stores."""
        if self._mount_root is None:
            return []
        job_dir = self._mount_root / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        return [Mount(mount_path=f"{layout.RESULTS_PATH}/{job_id}", host_path=str(job_dir), read_only=False)]

    def publish_env(self) -> dict[str, str]:
        return dict(self._env)

    def publish_secrets(self) -> dict[str, str]:
        """Pod secret name -> path in the publish pod (credentials never travel as env values)."""
        return dict(self._secrets)


class ResultStoreResource(dg.ConfigurableResource):
    """Where the publish pod stores a job's results, and how the ops read them back: each store's
    resource hands the ops a `ResultStorage` (ops take `dg.ResourceParam[ResultStorage]`)."""

    def create_resource(self, context: dg.InitResourceContext) -> ResultStorage:
        raise NotImplementedError

    @classmethod
    def configured(cls) -> ResultStoreResource:
        """The resource as the code location builds it (definitions.py)."""
        return cls()


class LocalResultStoreResource(ResultStoreResource):
    """Results in a local directory (`C2D_RESULTS_DIR`); the publish pod gets the job's folder of it
    mounted."""

    results_dir: str = _setting(lambda s: str(s.resolved_results_dir))

    def create_resource(self, context: dg.InitResourceContext) -> ResultStorage:
        root = Path(self.results_dir)
        env = {"C2D_RESULT_STORE": "local", "RESULTS_ROOT": layout.RESULTS_PATH}
        return ResultStorage(
            result_store_from_settings("local", local_root=root), env, network=False, mount_root=root
        )


S3_CREDENTIALS_PATH = "/secrets/s3-credentials"


class S3ClientResource(S3Resource):
    """dagster-aws's `S3Resource` whose clients come from the engine's one builder
    (c2d_core.result_stores.s3_client): the same tries, timeouts and addressing as the publish pod and
    the Provider."""

    timeout: float = Field(default=S3Settings().timeout, description="seconds to connect and per answer")

    def get_client(self) -> Any:
        import boto3

        session = boto3.session.Session(
            profile_name=self.profile_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
        )
        settings = S3Settings(
            endpoint_url=self.endpoint_url,
            region=self.region_name or "",
            max_attempts=self.max_attempts,
            timeout=self.timeout,
        )
        return s3_client(settings, session=session, unsigned=self.use_unsigned_session, verify=self.verify)


class S3ResultStoreResource(ResultStoreResource):
    """Results in an S3 bucket (`C2D_S3_*`), through `S3ClientResource`. Credentials: the boto3 chain in
    the run worker, and the `s3-credentials` secret (an AWS shared credentials file) in the publish pod."""

    bucket: str = _setting(lambda s: s.s3.bucket)
    endpoint_url: str = _setting(lambda s: _text(s.s3.endpoint_url))
    region_name: str = _setting(lambda s: s.s3.region)
    prefix: str = _setting(lambda s: s.s3.prefix)
    sse: str = _setting(lambda s: s.s3.sse)
    kms_key_id: str = _setting(lambda s: s.s3.kms_key_id)
    max_attempts: int = _setting(lambda s: s.s3.max_attempts)
    timeout: float = _setting(lambda s: s.s3.timeout)
    credentials_file: str = _setting(lambda s: str(s.resolved_s3_credentials_file))

    @classmethod
    def configured(cls) -> ResultStoreResource:
        return cls(
            bucket=from_environment("C2D_S3_BUCKET", engine_settings().s3.bucket),
            endpoint_url=from_environment("C2D_S3_ENDPOINT_URL", ""),
        )

    def settings(self) -> S3Settings:
        return S3Settings(
            bucket=self.bucket,
            endpoint_url=self.endpoint_url,
            region=self.region_name,
            prefix=self.prefix,
            sse=self.sse,
            kms_key_id=self.kms_key_id,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
        )

    def create_resource(self, context: dg.InitResourceContext) -> ResultStorage:
        settings = self.settings()
        client = S3ClientResource(
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            max_attempts=settings.max_attempts,
            timeout=settings.timeout,
        ).get_client()
        store = result_store_from_settings("s3", s3=settings, client=client)
        env = settings.env()
        secrets = {}
        if Path(self.credentials_file).exists():
            env["AWS_SHARED_CREDENTIALS_FILE"] = S3_CREDENTIALS_PATH
            secrets["s3-credentials"] = S3_CREDENTIALS_PATH
        return ResultStorage(store, env, secrets)


class IpfsResultStoreResource(ResultStoreResource):
    """Results added and pinned through a kubo node's RPC API (`C2D_IPFS_API_URL`)."""

    api_url: str = _setting(lambda s: s.ipfs_api_url)

    @classmethod
    def configured(cls) -> ResultStoreResource:
        return cls(api_url=from_environment("C2D_IPFS_API_URL", ""))

    def create_resource(self, context: dg.InitResourceContext) -> ResultStorage:
        store = result_store_from_settings("ipfs", ipfs_api_url=self.api_url)
        return ResultStorage(store, {"C2D_RESULT_STORE": "ipfs", "C2D_IPFS_API_URL": self.api_url})


class ExtensionResultStoreResource(ResultStoreResource):
    """A result store an extension registered (c2d_core.result_stores.register_result_store), built
    from the code location's environment; the publish pod gets the variables the store names."""

    kind: str = Field(description="the registered store's name (C2D_RESULT_STORE)")

    def create_resource(self, context: dg.InitResourceContext) -> ResultStorage:
        store_type = result_store_type(self.kind)
        if store_type is None:
            raise ValueError(f"C2D_RESULT_STORE={self.kind!r}: no extension registers this result store")
        env = {"C2D_RESULT_STORE": self.kind}
        env.update({name: os.environ[name] for name in store_type.variables if name in os.environ})
        return ResultStorage(store_type.build(os.environ), env, network=store_type.network)


def result_store_resource(kind: str) -> ResultStoreResource:
    """The resource for `C2D_RESULT_STORE=kind`: a built-in one, or an extension's registered store."""
    if kind in RESULT_STORE_RESOURCES:
        return RESULT_STORE_RESOURCES[kind].configured()
    if result_store_type(kind) is None:
        raise ValueError(f"C2D_RESULT_STORE={kind!r} is not one of {result_store_kinds()}")
    return ExtensionResultStoreResource(kind=kind)


# C2D_RESULT_STORE picks one, once, when the code location loads; its values are shown in the UI.
RESULT_STORE_RESOURCES: dict[str, type[ResultStoreResource]] = {
    "local": LocalResultStoreResource,
    "s3": S3ResultStoreResource,
    "ipfs": IpfsResultStoreResource,
}
