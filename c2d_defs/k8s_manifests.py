"""The Kubernetes objects of a job, built as pure functions: its PVC (the job volume), its ConfigMap
(the files `write_file` puts there) and one `batch/v1` Job per stage, built by dagster-k8s's
`construct_dagster_k8s_job`. Tests validate exactly what `K8sPodRunner` would submit.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any

import kubernetes.client
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

from c2d_core.settings import K8sSettings
from c2d_core.workflow import JOB_ID_PATTERN
from c2d_defs.pod_runner import Mount, PodSpec
from c2d_defs.pods import layout

VOLUME_NAME = "job-volume"
FILES_VOLUME = "job-files"
TMP_VOLUME = "tmp"
LAYOUT_CONTAINER = "volume-layout"
# The pod's stdout and stderr go both to the pod log (kubectl logs) and to its log file in the job
# volume (what publish uploads). Unlike Ocean's `cmd | tee log`, the command's exit code survives:
# it runs with its output on a fifo that tee drains, and the wrapper exits with the command's code.
LOG_WRAPPER = (
    'fifo="${TMPDIR:-/tmp}/c2d-log.$$"; mkfifo "$fifo" || exit 125; '
    'tee -a "$C2D_LOG_FILE" <"$fifo" & tee_pid=$!; '
    '"$@" >"$fifo" 2>&1; code=$?; wait "$tee_pid"; rm -f "$fifo"; exit "$code"'
)


@dataclass(frozen=True)
class K8sRunnerConfig:
    """Where and how pods run; every field is a Helm value (see helm/c2d/values.yaml, `jobs:`)."""

    namespace: str = "c2d-jobs"
    # The image of the volume-layout init container (the configure/publish pod image).
    pod_image: str = "c2d-pod:latest"
    storage_class: str | None = None
    access_mode: str = "ReadWriteOnce"
    # Pod secret name (PodSpec.secrets) -> Kubernetes Secret name; the key inside is the pod name.
    secret_names: Mapping[str, str] = field(default_factory=lambda: {"provider-key": "c2d-provider-key"})
    # Host folders a spec mounts (the local result store) -> PVC claim names holding the same tree.
    shared_claims: Mapping[str, str] = field(default_factory=dict)
    service_account_name: str | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    run_as_user: int = 1000
    run_as_group: int = 1000
    # The algorithm's root filesystem is read-only unless the operator says its images need it.
    algorithm_read_only_root: bool = True
    tmp_bytes: int = 256 * 1024**2
    # Scheduling plus image pull: past this a pod that has not started fails the stage.
    start_timeout: float = 300.0
    poll_interval: float = 2.0
    # Beyond the pod's own activeDeadlineSeconds before the runner itself gives up on it.
    deadline_grace: float = 60.0
    ttl_seconds_after_finished: int = 600
    termination_grace_seconds: int = 10
    keep_finished_jobs: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/instance": "c2d"})

    @classmethod
    def from_settings(cls, settings: K8sSettings, pod_image: str) -> K8sRunnerConfig:
        """The runner's config from `C2D_K8S_*`: every field the two share is copied by name, so a
        new setting needs no mapping code; the release name becomes the objects' instance label."""
        shared = {item.name for item in fields(cls)} & set(type(settings).model_fields)
        values: dict[str, Any] = {name: getattr(settings, name) for name in shared}
        values["image_pull_secrets"] = tuple(settings.image_pull_secrets)
        labels = {"app.kubernetes.io/instance": settings.release_name}
        return cls(**values, pod_image=pod_image, labels=labels)


# --- Names -------------------------------------------------------------------------------------------


def checked_job_id(job_id: str) -> str:
    """The job id, or a ValueError when it is not one (it becomes part of object names and selectors)."""
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} must be 32 lowercase hex characters")
    return job_id


def volume_claim_name(job_id: str) -> str:
    return f"c2d-{checked_job_id(job_id)}"


def files_config_map_name(job_id: str) -> str:
    return f"c2d-{checked_job_id(job_id)}-files"


def file_key(sub_path: str) -> str:
    """The ConfigMap key of a job-volume file (`pod/workflow.json` -> `pod--workflow.json`)."""
    parts = PurePosixPath(sub_path).parts
    if not parts or PurePosixPath(sub_path).is_absolute() or ".." in parts:
        raise ValueError(f"volume path {sub_path!r} must be relative and without '..'")
    key = "--".join(parts)
    if not re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", key):
        raise ValueError(f"volume path {sub_path!r} may hold only letters, digits and - . _")
    return key


def k8s_job_name(spec: PodSpec, suffix: str) -> str:
    """`c2d-<job id>-<component>-<suffix>`: 52 characters, under the 63 a label value allows."""
    return f"c2d-{checked_job_id(spec.job_id)}-{spec.component}-{suffix}"


def _quantity_cpu(cpu: float) -> str:
    return f"{max(1, round(cpu * 1000))}m"


# --- Manifests (pure) --------------------------------------------------------------------------------


def volume_manifest(
    job_id: str, disk_bytes: int, config: K8sRunnerConfig
) -> kubernetes.client.V1PersistentVolumeClaim:
    mib = -(-disk_bytes // 1024**2)  # rounded up: the volume is never smaller than the environment's disk
    return kubernetes.client.V1PersistentVolumeClaim(
        api_version="v1",
        kind="PersistentVolumeClaim",
        metadata=kubernetes.client.V1ObjectMeta(
            name=volume_claim_name(job_id),
            namespace=config.namespace,
            labels=_object_labels(job_id, "volume", config),
        ),
        spec=kubernetes.client.V1PersistentVolumeClaimSpec(
            access_modes=[config.access_mode],
            storage_class_name=config.storage_class,
            resources=kubernetes.client.V1VolumeResourceRequirements(requests={"storage": f"{mib}Mi"}),
        ),
    )


def files_manifest(
    job_id: str, files: Mapping[str, bytes], config: K8sRunnerConfig
) -> kubernetes.client.V1ConfigMap:
    return kubernetes.client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=kubernetes.client.V1ObjectMeta(
            name=files_config_map_name(job_id),
            namespace=config.namespace,
            labels=_object_labels(job_id, "files", config),
        ),
        binary_data={file_key(path): base64.b64encode(content).decode() for path, content in files.items()},
    )


def _object_labels(job_id: str, component: str, config: K8sRunnerConfig) -> dict[str, str]:
    return {
        **config.labels,
        "app.kubernetes.io/name": "c2d",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "c2d-engine",
        "c2d/job-id": job_id,
        "c2d/component": component,
    }


def pod_labels(spec: PodSpec, config: K8sRunnerConfig) -> dict[str, str]:
    """The spec's labels plus what the chart's NetworkPolicies select on (`c2d/network`)."""
    return {
        **config.labels,
        "app.kubernetes.io/managed-by": "c2d-engine",
        **spec.labels,
        "app.kubernetes.io/name": "c2d",
        "app.kubernetes.io/component": spec.component,
        "c2d/job-id": spec.job_id,
        "c2d/component": spec.component,
        "c2d/network": "allowed" if spec.network else "denied",
    }


def log_path_in_pod(spec: PodSpec) -> str:
    """Where the pod writes `spec.log_sub_path`: through the writable mount that holds it."""
    candidates = [
        m
        for m in spec.mounts
        if not m.read_only
        and m.host_path is None
        and (m.sub_path == "" or spec.log_sub_path.startswith(m.sub_path.rstrip("/") + "/"))
    ]
    if not candidates:
        raise ValueError(f"log path {spec.log_sub_path!r} is not under a writable mount of the pod")
    mount = max(candidates, key=lambda m: len(m.sub_path))
    rest = spec.log_sub_path[len(mount.sub_path) :].lstrip("/") if mount.sub_path else spec.log_sub_path
    return f"{mount.mount_path.rstrip('/')}/{rest}"


def _security_context(read_only_root: bool) -> dict[str, Any]:
    return {
        "run_as_non_root": True,
        "allow_privilege_escalation": False,
        "privileged": False,
        "read_only_root_filesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def _volumes_and_mounts(
    spec: PodSpec, files: Collection[str], config: K8sRunnerConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": VOLUME_NAME, "persistent_volume_claim": {"claim_name": volume_claim_name(spec.job_id)}},
        {"name": TMP_VOLUME, "empty_dir": {"size_limit": str(config.tmp_bytes)}},
    ]
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mount_path": "/tmp"}]  # noqa: S108 - the pod's own
    keys = {file_key(path) for path in files}
    uses_files = False
    for index, mount in enumerate(spec.mounts):
        if mount.host_path is not None:
            claim, sub_path = _shared_claim(mount, config)
            name = f"shared-{index}"
            volumes.append({"name": name, "persistent_volume_claim": {"claim_name": claim}})
            mounts.append(
                {
                    "name": name,
                    "mount_path": mount.mount_path,
                    "sub_path": sub_path,
                    "read_only": mount.read_only,
                }
            )
        elif mount.sub_path and file_key(mount.sub_path) in keys:
            # A file the runner wrote (write_file) comes from the job's ConfigMap, always read-only.
            uses_files = True
            mounts.append(
                {
                    "name": FILES_VOLUME,
                    "mount_path": mount.mount_path,
                    "sub_path": file_key(mount.sub_path),
                    "read_only": True,
                }
            )
        else:
            entry = {"name": VOLUME_NAME, "mount_path": mount.mount_path, "read_only": mount.read_only}
            if mount.sub_path:
                entry["sub_path"] = mount.sub_path
            mounts.append(entry)
    if uses_files:
        volumes.append(
            {
                "name": FILES_VOLUME,
                "config_map": {"name": files_config_map_name(spec.job_id), "default_mode": 0o444},
            }
        )
    for index, (name, pod_path) in enumerate(sorted(spec.secrets.items())):
        secret_name = config.secret_names.get(name)
        if secret_name is None:
            known = ", ".join(sorted(config.secret_names)) or "none"
            raise ValueError(f"secret {name!r} is not configured (configured: {known})")
        volume = f"secret-{index}"
        # 0440 with fsGroup: readable by the pod's non-root user, by nobody else on the node.
        volumes.append({"name": volume, "secret": {"secret_name": secret_name, "default_mode": 0o440}})
        mounts.append({"name": volume, "mount_path": pod_path, "sub_path": name, "read_only": True})
    return volumes, mounts


def _shared_claim(mount: Mount, config: K8sRunnerConfig) -> tuple[str, str]:
    host = PurePosixPath(mount.host_path or "")
    for root, claim in config.shared_claims.items():
        if host == PurePosixPath(root) or PurePosixPath(root) in host.parents:
            return claim, str(host.relative_to(root)) if host != PurePosixPath(root) else ""
    raise ValueError(
        f"host folder {mount.host_path} has no shared volume on Kubernetes "
        f"(set jobs.sharedClaims in the Helm values; configured: {sorted(config.shared_claims) or 'none'})"
    )


def job_manifest(
    spec: PodSpec, name: str, config: K8sRunnerConfig, files: Collection[str] = ()
) -> kubernetes.client.V1Job:
    """The Job that runs `spec`, built by dagster-k8s's own builder (as `execute_k8s_job` does)."""
    volumes, mounts = _volumes_and_mounts(spec, files, config)
    log_file = log_path_in_pod(spec)
    read_only_root = config.algorithm_read_only_root if spec.component == "algorithm" else True
    quantities = {"cpu": _quantity_cpu(spec.cpu), "memory": str(spec.memory_bytes)}
    layout_dirs = [f"/volume/{sub_path}" for sub_path in layout.VOLUME_DIRS]
    container_config = {
        "name": spec.component,
        "command": ["/bin/sh", "-c", LOG_WRAPPER, "c2d-log", *spec.command],
        "working_dir": spec.workdir,
        "env": [
            *({"name": key, "value": value} for key, value in sorted(spec.env.items())),
            {"name": "C2D_LOG_FILE", "value": log_file},
        ],
        "volume_mounts": mounts,
        # requests = limits: Guaranteed QoS, so a job gets exactly what its environment sells.
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "security_context": _security_context(read_only_root),
        "termination_message_path": layout.TERMINATION_LOG_PATH,
        "termination_message_policy": "File",
    }
    init_container = {
        "name": LAYOUT_CONTAINER,
        "image": config.pod_image,
        "image_pull_policy": config.image_pull_policy,
        "command": ["mkdir", "-p", *layout_dirs],
        "volume_mounts": [{"name": VOLUME_NAME, "mount_path": "/volume"}],
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            "limits": {"cpu": "50m", "memory": "32Mi"},
        },
        "security_context": _security_context(True),
    }
    pod_spec_config = {
        "restart_policy": "Never",
        "active_deadline_seconds": spec.deadline_seconds,
        "automount_service_account_token": False,
        # No Service addresses in the environment: the algorithm sees Ocean's variables only.
        "enable_service_links": False,
        "termination_grace_period_seconds": config.termination_grace_seconds,
        "init_containers": [init_container],
        "volumes": volumes,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": config.run_as_user,
            "run_as_group": config.run_as_group,
            "fs_group": config.run_as_group,
            "fs_group_change_policy": "OnRootMismatch",
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
    }
    if config.service_account_name:
        pod_spec_config["service_account_name"] = config.service_account_name
    labels = pod_labels(spec, config)
    user_config = UserDefinedDagsterK8sConfig(
        container_config=container_config,
        pod_spec_config=pod_spec_config,
        pod_template_spec_metadata={"labels": labels},
        job_metadata={"labels": labels},
        job_spec_config={
            "backoff_limit": 0,
            "ttl_seconds_after_finished": config.ttl_seconds_after_finished,
            # The Job's own deadline also covers scheduling and pulling: a backstop for the runner.
            "active_deadline_seconds": spec.deadline_seconds + int(config.start_timeout),
        },
    )
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image=spec.image,
            dagster_home=None,
            image_pull_policy=config.image_pull_policy,
            image_pull_secrets=[{"name": secret} for secret in config.image_pull_secrets],
        ),
        args=None,
        job_name=name,
        pod_name=name,
        component=spec.component,
        user_defined_k8s_config=user_config,
        labels=labels,
    )
    job.metadata.namespace = config.namespace
    return job


def pod_manifest(
    spec: PodSpec, name: str, config: K8sRunnerConfig, files: Collection[str] = ()
) -> kubernetes.client.V1Pod:
    """The pod the Job's controller creates from its template (for validation and tests)."""
    template = job_manifest(spec, name, config, files).spec.template
    return kubernetes.client.V1Pod(
        api_version="v1", kind="Pod", metadata=template.metadata, spec=template.spec
    )


def to_dict(obj: Any) -> dict[str, Any]:
    """A kubernetes client model as the JSON the API server receives (camelCase, no nulls)."""
    result: dict[str, Any] = kubernetes.client.ApiClient().sanitize_for_serialization(obj)
    return result
