"""The resources a compute job runs with, one implementation per deployment.

`resources_by_deployment` in definitions.py picks them once from `C2D_DEPLOYMENT`; ops only see the
interfaces (a `PodRunner`, a result store, the environments) and never ask which mode they are in.
Paths and limits come from `EngineSettings` when the run starts, not when the code location loads.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import dagster as dg

from c2d_core.environments import Environment, Environments
from c2d_core.results import LocalResultStore, ResultStore
from c2d_core.settings import EngineSettings
from c2d_defs.pod_spec import Mount, PodResult, PodRunner, PodSpec
from c2d_defs.pods import layout


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
        from c2d_defs.local_pod_runner import LocalPodRunner

        settings = EngineSettings()
        env_path = self.environments_file or str(settings.environments_file)
        secrets: dict[str, Path] = {}
        key_file = settings.resolved_provider_key_file
        if key_file.exists():
            secrets["provider-key"] = key_file
        return LocalPodRunner(
            work_dir=Path(self.work_dir) if self.work_dir else settings.resolved_work_dir,
            environments=Environments.load(env_path),
            pod_image=settings.pod_image,
            secrets=secrets,
            uid_base=settings.sandbox_uid_base,
            slots=settings.sandbox_slots,
            keep_work_dirs=settings.keep_work_dirs,
        )

    def prepare_volume(self, job_id: str, disk_bytes: int) -> None:
        self._runner.prepare_volume(job_id, disk_bytes)

    def write_file(self, job_id: str, sub_path: str, content: bytes) -> None:
        self._runner.write_file(job_id, sub_path, content)

    def run(self, spec: PodSpec) -> PodResult:
        return self._runner.run(spec)

    def release_volume(self, job_id: str) -> None:
        self._runner.release_volume(job_id)


class LocalResultStoreResource(dg.ConfigurableResource):
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
