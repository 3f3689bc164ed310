"""The resources a compute job runs with, one implementation per deployment.

`resources_by_deployment` in definitions.py picks them once from `C2D_DEPLOYMENT`; ops only see the
interfaces (a `PodRunner`, a result store, the environments) and never ask which mode they are in.
Paths and limits come from `EngineSettings` when the run starts, not when the code location loads.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from c2d_core.environments import Environment, Environments
from c2d_core.results import LocalResultStore, ResultStore
from c2d_core.settings import EngineSettings
from c2d_defs.pod_spec import Mount, PodResult, PodRunner, PodSpec
from c2d_defs.pods import layout

if TYPE_CHECKING:
    from c2d_core.result_stores import S3Settings


class ComputeEnvironments(dg.ConfigurableResource):
    """The compute environments file; an empty path means the one in EngineSettings."""

    environments_file: str = ""

    @cached_property
    def _environments(self) -> Environments:
        path = self.environments_file or str(EngineSettings().environments_file)
        return Environments.load(path)

    def get(self, env_id: str) -> Environment:
        return self._environments.get(env_id)

    def load(self) -> Environments:
        return self._environments


class LocalPodRunnerResource(dg.ConfigurableResource, PodRunner):
    """Runs pods as bubblewrap sandboxes on this machine (the embedded default)."""

    work_dir: str = ""
    environments_file: str = ""

    @cached_property
    def _runner(self) -> PodRunner:
        from c2d_defs.sandbox import LocalPodRunner

        settings = EngineSettings()
        env_path = self.environments_file or str(settings.environments_file)
        secrets: dict[str, Path] = {}
        key_file = settings.resolved_provider_key_file
        if key_file.exists():
            secrets["provider-key"] = key_file
        s3_credentials = settings.resolved_s3_credentials_file
        if s3_credentials.exists():
            secrets["s3-credentials"] = s3_credentials
        return LocalPodRunner(
            work_dir=Path(self.work_dir) if self.work_dir else settings.resolved_work_dir,
            environments=Environments.load(env_path),
            pod_image=settings.pod_image,
            secrets=secrets,
            uid_base=settings.sandbox_uid_base,
            slots=settings.sandbox_slots,
            keep_work_dirs=settings.keep_work_dirs,
            cgroup_root=settings.sandbox_cgroup_root,
            cgroup_version=settings.sandbox_cgroups,
        )

    def prepare_volume(self, job_id: str, disk_bytes: int) -> None:
        self._runner.prepare_volume(job_id, disk_bytes)

    def write_file(self, job_id: str, sub_path: str, content: bytes) -> None:
        self._runner.write_file(job_id, sub_path, content)

    def run(self, spec: PodSpec) -> PodResult:
        return self._runner.run(spec)

    def release_volume(self, job_id: str) -> None:
        self._runner.release_volume(job_id)

    def has_volume(self, job_id: str) -> bool:
        return self._runner.has_volume(job_id)

    def kill_pods(self, job_id: str) -> int:
        return self._runner.kill_pods(job_id)


class ResultStoreResource(dg.ConfigurableResource):
    """Where the publish pod stores a job's results, and how the ops read them back.

    Ops take this type and call only these methods; which store it is (local, S3, IPFS) is decided
    once per deployment in definitions.py.
    """

    def store(self) -> ResultStore:
        raise NotImplementedError

    def publish_mounts(self, job_id: str) -> list[Mount]:
        return []

    def publish_env(self) -> dict[str, str]:
        raise NotImplementedError

    def publish_secrets(self) -> dict[str, str]:
        """Pod secret name -> path in the publish pod (credentials never travel as env values)."""
        return {}

    @property
    def publish_network(self) -> bool:
        """Whether the publish pod needs the network (remote stores) or not (a mounted folder)."""
        return True


class LocalResultStoreResource(ResultStoreResource):
    """Results in a local directory; the publish pod gets the job's folder of it mounted."""

    results_dir: str = ""

    @property
    def root(self) -> str:
        return self.results_dir or str(EngineSettings().resolved_results_dir)

    def store(self) -> ResultStore:
        return LocalResultStore(Path(self.root))

    def publish_mounts(self, job_id: str) -> list[Mount]:
        job_dir = Path(self.root) / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        return [Mount(mount_path=f"{layout.RESULTS_PATH}/{job_id}", host_path=str(job_dir), read_only=False)]

    def publish_env(self) -> dict[str, str]:
        return {"C2D_RESULT_STORE": "local", "RESULTS_ROOT": layout.RESULTS_PATH}

    @property
    def publish_network(self) -> bool:
        return False


S3_CREDENTIALS_PATH = "/secrets/s3-credentials"


class S3ResultStoreResource(ResultStoreResource):
    """Results in an S3 bucket through dagster-aws's `S3Resource`; empty fields mean EngineSettings
    (`C2D_S3_*`), read when a run starts. Credentials: the boto3 chain in the run worker, and the
    `s3-credentials` secret (an AWS shared credentials file) in the publish pod."""

    bucket: str = ""
    endpoint_url: str = ""
    region_name: str = ""
    prefix: str = ""
    sse: str = ""

    def _settings(self) -> S3Settings:
        from c2d_core.result_stores import S3Settings

        engine = EngineSettings()
        return S3Settings(
            bucket=self.bucket or engine.s3_bucket,
            endpoint_url=self.endpoint_url or engine.s3_endpoint_url or None,
            region=self.region_name or engine.s3_region,
            prefix=self.prefix or engine.s3_prefix,
            sse=self.sse or engine.s3_sse,
            kms_key_id=engine.s3_kms_key_id,
            max_attempts=engine.s3_max_attempts,
            timeout=engine.s3_timeout,
        )

    def store(self) -> ResultStore:
        from dagster_aws.s3 import S3Resource

        from c2d_core.result_stores import S3ResultStore

        settings = self._settings()
        s3 = S3Resource(
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            max_attempts=settings.max_attempts,
        )
        return S3ResultStore(s3.get_client(), settings)

    def publish_env(self) -> dict[str, str]:
        env = self._settings().env()
        if EngineSettings().resolved_s3_credentials_file.exists():
            env["AWS_SHARED_CREDENTIALS_FILE"] = S3_CREDENTIALS_PATH
        return env

    def publish_secrets(self) -> dict[str, str]:
        if EngineSettings().resolved_s3_credentials_file.exists():
            return {"s3-credentials": S3_CREDENTIALS_PATH}
        return {}


class IpfsResultStoreResource(ResultStoreResource):
    """Results added and pinned through a kubo node's RPC API (`C2D_IPFS_API_URL`)."""

    api_url: str = ""

    def _api(self) -> str:
        api = self.api_url or EngineSettings().ipfs_api_url
        if not api:
            raise ValueError("the IPFS result store needs C2D_IPFS_API_URL (the node's RPC API)")
        return api

    def store(self) -> ResultStore:
        from c2d_core.result_stores import IpfsResultStore

        return IpfsResultStore(self._api())

    def publish_env(self) -> dict[str, str]:
        return {"C2D_RESULT_STORE": "ipfs", "C2D_IPFS_API_URL": self._api()}


# C2D_RESULT_STORE picks one, once, when the code location loads; its settings are read per run.
RESULT_STORE_RESOURCES: dict[str, type[ResultStoreResource]] = {
    "local": LocalResultStoreResource,
    "s3": S3ResultStoreResource,
    "ipfs": IpfsResultStoreResource,
}
