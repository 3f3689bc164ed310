"""The Kubernetes deployment's resources and its volume cleanup sensor (`C2D_DEPLOYMENT=k8s`).

The sensor only lists volumes and reads run storage; `volume_cleanup_job` (c2d_defs.jobs.volume_cleanup)
deletes what it found, so an API-server stall costs a retried op, not a sensor timeout.

Imported only by the `k8s` entry of `resources_by_deployment`, so the embedded default never pays
for dagster-k8s. The runner and its API client are made when a run starts (`create_resource`, with
`C2D_K8S_*` as the Helm chart sets them), never when the code location loads: the definitions load
without a cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import dagster as dg
from pydantic import Field

from c2d_core import engine
from c2d_core.settings import engine_settings
from c2d_defs import maintenance
from c2d_defs.k8s_pod_runner import K8sPodRunner, K8sRunnerConfig, default_client
from c2d_defs.maintenance import act_on_each
from c2d_defs.pod_runner import PodRunner

VOLUME_CLEANUP_JOB_NAME = "volume_cleanup_job"
VOLUME_CLEANUP_OP = "release_volumes"


class K8sPodRunnerResource(dg.ConfigurableResource):
    """Runs pods as Kubernetes Jobs through dagster-k8s (production); hands the ops a `K8sPodRunner`
    configured from `C2D_K8S_*` (the `.k8s` of the settings tree)."""

    namespace: str = Field(default_factory=lambda: engine_settings().k8s.namespace)
    pod_image: str = Field(default_factory=lambda: engine_settings().pod_image)

    def create_resource(self, context: dg.InitResourceContext) -> PodRunner:
        k8s = engine_settings().k8s.model_copy(update={"namespace": self.namespace})
        return K8sPodRunner(default_client(), K8sRunnerConfig.from_settings(k8s, self.pod_image))


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
    publishing failed (engine.VOLUME_KEPT: its outputs wait there for an operator to publish again)."""
    orphans = []
    for job_id, created_at in volumes:
        if now - created_at < grace_seconds:
            continue
        runs = runs_of(job_id)
        if any(_awaits_salvage(run) or engine.VOLUME_KEPT in engine.current_tags(run.tags) for run in runs):
            continue
        if all(run.is_finished for run in runs):
            ended = [run_end for run in runs if (run_end := _end_time(run)) is not None]
            if ended and now - max(ended) < grace_seconds:
                continue
            orphans.append(job_id)
    return orphans


def _awaits_salvage(run: Any) -> bool:
    tags = engine.current_tags(getattr(run, "tags", None))
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
    if engine_settings().keep_work_dirs:
        return dg.SkipReason("C2D_KEEP_WORK_DIRS is set: job volumes are kept for inspection")
    grace = engine_settings().k8s.cleanup_grace_seconds
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
