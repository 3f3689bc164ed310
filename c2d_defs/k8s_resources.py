"""The Kubernetes deployment's resources and its volume cleanup sensor (`C2D_DEPLOYMENT=k8s`).

The sensor only lists volumes and reads run storage; `volume_cleanup_job` (c2d_defs.jobs.volume_cleanup)
deletes what it found, so an API-server stall costs a retried op, not a sensor timeout.

Imported only by the `k8s` entry of `resources_by_deployment`, so the embedded default never pays
for dagster-k8s. Settings are read when a run starts (`C2D_K8S_*`, set by the Helm chart), never
when the code location loads: the definitions load without a cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property, partial
from typing import Any

import dagster as dg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from c2d_core import engine
from c2d_core.settings import EngineSettings
from c2d_defs import maintenance
from c2d_defs.k8s_pod_runner import K8sPodRunner, K8sRunnerConfig, default_client
from c2d_defs.maintenance import act_on_each
from c2d_defs.pod_spec import PodResult, PodRunner, PodSpec

VOLUME_CLEANUP_JOB_NAME = "volume_cleanup_job"
VOLUME_CLEANUP_OP = "release_volumes"


class K8sSettings(BaseSettings):
    """`C2D_K8S_*`: where job pods run and how; the chart sets each from `jobs:` in values.yaml."""

    model_config = SettingsConfigDict(env_prefix="C2D_K8S_", extra="ignore")

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
    tmp_bytes: int = Field(default=256 * 1024**2, ge=1024**2)
    start_timeout: float = Field(default=300.0, gt=0, description="seconds to schedule and pull")
    poll_interval: float = Field(default=2.0, gt=0)
    deadline_grace: float = Field(default=60.0, ge=0)
    ttl_seconds_after_finished: int = Field(default=600, ge=0)
    keep_finished_jobs: bool = False
    release_name: str = "c2d"
    # The cleanup sensor leaves a volume alone this long after its run ended (operators may look).
    cleanup_grace_seconds: int = Field(default=900, ge=0)

    def runner_config(self, pod_image: str) -> K8sRunnerConfig:
        return K8sRunnerConfig(
            namespace=self.namespace,
            pod_image=pod_image,
            storage_class=self.storage_class,
            access_mode=self.access_mode,
            secret_names=dict(self.secret_names),
            shared_claims=dict(self.shared_claims),
            service_account_name=self.service_account_name,
            image_pull_policy=self.image_pull_policy,
            image_pull_secrets=tuple(self.image_pull_secrets),
            run_as_user=self.run_as_user,
            run_as_group=self.run_as_group,
            algorithm_read_only_root=self.algorithm_read_only_root,
            tmp_bytes=self.tmp_bytes,
            start_timeout=self.start_timeout,
            poll_interval=self.poll_interval,
            deadline_grace=self.deadline_grace,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            keep_finished_jobs=self.keep_finished_jobs,
            labels={"app.kubernetes.io/instance": self.release_name},
        )


class K8sPodRunnerResource(dg.ConfigurableResource, PodRunner):
    """Runs pods as Kubernetes Jobs through dagster-k8s (production)."""

    namespace: str = ""

    @cached_property
    def _runner(self) -> K8sPodRunner:
        settings = K8sSettings()
        if self.namespace:
            settings = settings.model_copy(update={"namespace": self.namespace})
        return K8sPodRunner(default_client(), settings.runner_config(EngineSettings().pod_image))

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

    def volumes(self) -> list[tuple[str, float]]:
        return self._runner.volumes()


# --- Cleanup ----------------------------------------------------------------------------------------


def orphaned_volumes(
    volumes: Iterable[tuple[str, float]],
    runs_of: Callable[[str], Sequence[Any]],
    now: float,
    grace_seconds: float,
) -> list[str]:
    """Job ids whose volume outlived its run: every run of the job has ended (or none exists) and
    the volume is older than the grace period. A job with a run still going is never touched, nor one
    the stage watchdog ended and has yet to publish (its salvage run needs the volume), nor one whose
    publishing failed (`c2d/volume_kept`: its outputs wait there for an operator to publish again)."""
    orphans = []
    for job_id, created_at in volumes:
        if now - created_at < grace_seconds:
            continue
        runs = runs_of(job_id)
        if any(_awaits_salvage(run) or engine.VOLUME_KEPT in (run.tags or {}) for run in runs):
            continue
        if all(run.is_finished for run in runs):
            ended = [run_end for run in runs if (run_end := _end_time(run)) is not None]
            if ended and now - max(ended) < grace_seconds:
                continue
            orphans.append(job_id)
    return orphans


def _awaits_salvage(run: Any) -> bool:
    tags = getattr(run, "tags", None) or {}
    return engine.WATCHDOG in tags and engine.DATE_FINISHED not in tags


def _end_time(run: Any) -> float | None:
    return engine.JobTags.from_tags(getattr(run, "tags", None)).date_finished


def release_orphaned_volumes(
    instance: dg.DagsterInstance,
    pod_runner: PodRunner,
    now: float,
    grace_seconds: float,
    job_ids: Sequence[str] | None = None,
    log: Any = None,
) -> list[str]:
    """Release the volumes that outlived their runs (only those of `job_ids` when given), each
    judged again now; the job ids released. What the volume cleanup job's op runs."""
    volumes = pod_runner.volumes()
    if job_ids is not None:
        volumes = [volume for volume in volumes if volume[0] in set(job_ids)]
    orphans = orphaned_volumes(volumes, partial(runs_of_job, instance), now, grace_seconds)

    def release(job_id: str) -> bool:
        pod_runner.release_volume(job_id)
        return True

    return act_on_each(orphans, release, lambda job_id: f"job {job_id}", log)


def runs_of_job(instance: dg.DagsterInstance, job_id: str) -> Sequence[Any]:
    return instance.get_runs(filters=dg.RunsFilter(tags={engine.JOB_ID: job_id}), limit=20)


@dg.sensor(
    description="Ask volume_cleanup_job to delete job volumes, files and Jobs that a run left behind "
    "when it ended abnormally.",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    job_name=VOLUME_CLEANUP_JOB_NAME,
)
def k8s_volume_cleanup(
    context: dg.SensorEvaluationContext, pod_runner: dg.ResourceParam[PodRunner]
) -> dg.RunRequest | dg.SkipReason:
    if EngineSettings().keep_work_dirs:
        return dg.SkipReason("C2D_KEEP_WORK_DIRS is set: job volumes are kept for inspection")
    grace = K8sSettings().cleanup_grace_seconds
    orphans = orphaned_volumes(
        pod_runner.volumes(), partial(runs_of_job, context.instance), time.time(), grace
    )
    wanted = maintenance.request(
        context.instance,
        what="volume_cleanup",
        job_name=VOLUME_CLEANUP_JOB_NAME,
        op_name=VOLUME_CLEANUP_OP,
        targets=orphans,
        reason=f"{len(orphans)} job volume(s) outlived their runs: {json.dumps(orphans[:10])}",
    )
    if wanted is None:
        return maintenance.nothing_to_ask(f"{len(orphans)} left-over job volume(s)", "release")
    return wanted
