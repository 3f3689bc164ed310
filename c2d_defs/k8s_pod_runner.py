"""Runs pod specs as Kubernetes Jobs through dagster-k8s: the production `PodRunner`.

Each job gets a PVC (the job volume, at /data) and a ConfigMap (the files `write_file` puts there:
the workflow document); each stage is a `batch/v1` Job built by dagster-k8s's
`construct_dagster_k8s_job` and followed with its `DagsterKubernetesClient` — the builder and client
behind `execute_k8s_job`. The function itself is not called, because it cannot do what a stage
needs (see docs/deploy-kubernetes.md, "Why not execute_k8s_job"): it hard-codes its API client,
waits up to a day for a pod that cannot be scheduled, raises without the exit code, OOM flag or
termination message, and needs an op context where a runner only gets a spec.

`pod_manifest` / `job_manifest` / `volume_manifest` are pure: tests validate what would be submitted.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import re
import secrets
import signal
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import kubernetes.client
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_k8s.client import DagsterK8sError, DagsterKubernetesClient, WaitForPodState
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from kubernetes.client.rest import ApiException

from c2d_defs.pod_spec import Mount, PodResult, PodRunner, PodSpec, Termination
from c2d_defs.pods import layout

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")
TERMINATION_MESSAGE_LIMIT = 4096
LOG_TAIL_LIMIT = 4096
LOG_TAIL_LINES = 200
VOLUME_NAME = "job-volume"
FILES_VOLUME = "job-files"
TMP_VOLUME = "tmp"
LAYOUT_CONTAINER = "volume-layout"
# A ConfigMap holds at most 1 MiB; the workflow document is a few KiB.
FILES_LIMIT = 1000 * 1024
# Waiting reasons that no amount of waiting fixes.
_IMAGE_NEVER = frozenset({"InvalidImageName", "ErrImageNeverPull"})
_IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff"})
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


# --- Names -------------------------------------------------------------------------------------------


def _check_job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} must be 32 lowercase hex characters")
    return job_id


def volume_claim_name(job_id: str) -> str:
    return f"c2d-{_check_job_id(job_id)}"


def files_config_map_name(job_id: str) -> str:
    return f"c2d-{_check_job_id(job_id)}-files"


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
    return f"c2d-{_check_job_id(spec.job_id)}-{spec.component}-{suffix}"


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


# --- Reading a finished pod --------------------------------------------------------------------------


def pod_outcome(pod: Any, spec: PodSpec) -> tuple[Termination, int | None, str, str]:
    """(termination, exit code, message, termination message) of a pod that has ended."""
    status = pod.status
    container = next(
        (s for s in (status.container_statuses or []) if s.name == spec.component),
        None,
    )
    terminated = container.state.terminated if container and container.state else None
    termination_message = ((terminated.message if terminated else None) or "")[:TERMINATION_MESSAGE_LIMIT]
    exit_code = terminated.exit_code if terminated else None
    if status.reason == "DeadlineExceeded":
        return (
            "DeadlineExceeded",
            exit_code,
            f"pod was killed at its deadline of {spec.deadline_seconds} s",
            termination_message,
        )
    if status.reason == "Evicted":
        what = status.message or "evicted by the node"
        kind: Termination = "DiskQuotaExceeded" if "ephemeral" in what.lower() else "Error"
        return kind, exit_code, f"pod was evicted: {what}", termination_message
    if terminated is None:
        return "StartError", None, f"pod ended without its container running ({status.phase})", ""
    if terminated.reason == "OOMKilled":
        return (
            "OOMKilled",
            exit_code,
            f"pod was killed for using more than its memory limit of {spec.memory_bytes} bytes",
            termination_message,
        )
    if terminated.reason in ("StartError", "ContainerCannotRun"):
        detail = terminated.message or terminated.reason
        return "StartError", exit_code, f"the pod's command could not be run: {detail}", ""
    if exit_code == 0:
        return "Completed", 0, "pod exited with code 0", termination_message
    message = f"pod exited with code {exit_code}"
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        with contextlib.suppress(ValueError):
            message += f" (killed by {signal.Signals(exit_code - 128).name})"
    return "Error", exit_code, message, termination_message


def start_problem(pod: Any, spec: PodSpec) -> tuple[Termination, str] | None:
    """Why a pod that has not started yet never will, or None while it still may."""
    for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in _IMAGE_NEVER:
            return (
                "ImageNotFound",
                f"image of container {status.name} cannot be pulled: {waiting.message or waiting.reason}",
            )
        terminated = status.state.terminated if status.state else None
        if status.name == LAYOUT_CONTAINER and terminated is not None and terminated.exit_code != 0:
            return (
                "StartError",
                f"the job volume could not be laid out: {terminated.message or terminated.reason}",
            )
    return None


def pending_reason(pod: Any | None, spec: PodSpec, waited: float) -> tuple[Termination, str]:
    """How a pod still not running at the start timeout is reported."""
    if pod is None:
        return "StartError", f"no pod was created for the {spec.component} stage within {waited:.0f} s"
    for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in _IMAGE_PULL | _IMAGE_NEVER:
            return (
                "ImageNotFound",
                f"image of container {status.name} could not be pulled within {waited:.0f} s: "
                f"{waiting.reason}: {waiting.message or ''}".rstrip(": "),
            )
        if waiting is not None and waiting.reason:
            return (
                "StartError",
                (
                    f"container {status.name} did not start within {waited:.0f} s: "
                    f"{waiting.reason}: {waiting.message or ''}"
                ).rstrip(": "),
            )
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return (
                "StartError",
                f"pod could not be scheduled within {waited:.0f} s: {condition.reason}: {condition.message}",
            )
    return "StartError", f"pod did not start within {waited:.0f} s (phase {pod.status.phase})"


def _main_started(pod: Any, spec: PodSpec) -> bool:
    if pod.status.phase in ("Running", "Succeeded", "Failed"):
        return True
    for status in pod.status.container_statuses or []:
        if (
            status.name == spec.component
            and status.state
            and (status.state.running or status.state.terminated)
        ):
            return True
    return False


# --- The runner --------------------------------------------------------------------------------------


class K8sPodRunner(PodRunner):
    """Runs `PodSpec`s as Kubernetes Jobs in one namespace, with a PVC per job volume.

    `client` is dagster-k8s's `DagsterKubernetesClient`; tests pass one built on a fake API
    (`tests/k8s_fakes.py`), with the fake's clock as timer and sleeper, so nothing waits.
    """

    def __init__(
        self,
        client: DagsterKubernetesClient,
        config: K8sRunnerConfig,
        *,
        suffix: Callable[[], str] = lambda: secrets.token_hex(3)[:5],
    ) -> None:
        self.client = client
        self.config = config
        self._suffix = suffix

    # --- volumes ------------------------------------------------------------------------------------

    def prepare_volume(self, job_id: str, disk_bytes: int) -> None:
        body = volume_manifest(job_id, disk_bytes, self.config)
        self._create(
            lambda: self.client.core_api.create_namespaced_persistent_volume_claim(
                self.config.namespace, body
            )
        )

    def write_file(self, job_id: str, sub_path: str, content: bytes) -> None:
        key = file_key(sub_path)
        name = files_config_map_name(job_id)
        current = self._files(job_id)
        current[key] = content
        if sum(len(value) for value in current.values()) > FILES_LIMIT:
            raise OSError(errno.EFBIG, f"files written to the job volume exceed {FILES_LIMIT} bytes")
        body = files_manifest(job_id, {}, self.config)
        body.binary_data = {k: base64.b64encode(v).decode() for k, v in current.items()}
        try:
            self.client.core_api.create_namespaced_config_map(self.config.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise _os_error(exc, f"ConfigMap {name}") from None
            try:
                self.client.core_api.replace_namespaced_config_map(name, self.config.namespace, body)
            except ApiException as again:
                raise _os_error(again, f"ConfigMap {name}") from None

    def release_volume(self, job_id: str) -> None:
        namespace = self.config.namespace
        # Jobs first: a PVC stays (Terminating) while a pod still mounts it.
        for job_name in self._job_names(job_id):
            self._delete_job(job_name)
        self._delete(
            lambda: self.client.core_api.delete_namespaced_config_map(
                files_config_map_name(job_id), namespace
            )
        )
        self._delete(
            lambda: self.client.core_api.delete_namespaced_persistent_volume_claim(
                volume_claim_name(job_id), namespace
            )
        )

    def has_volume(self, job_id: str) -> bool:
        try:
            self.client.core_api.read_namespaced_persistent_volume_claim(
                volume_claim_name(job_id), self.config.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _os_error(exc, f"PVC {volume_claim_name(job_id)}") from None
        return True

    def kill_pods(self, job_id: str) -> int:
        """Delete the job's Jobs (their pods go with them); the volume stays for a publish."""
        names = self._job_names(job_id)
        for job_name in names:
            self._delete_job(job_name)
        return len(names)

    def volumes(self) -> list[tuple[str, float]]:
        """(job id, creation time) of every job volume here, for the cleanup sensor."""
        claims = self.client.core_api.list_namespaced_persistent_volume_claim(
            self.config.namespace,
            label_selector="app.kubernetes.io/managed-by=c2d-engine,c2d/component=volume",
        )
        found = []
        for item in claims.items:
            job_id = (item.metadata.labels or {}).get("c2d/job-id", "")
            created = item.metadata.creation_timestamp
            if JOB_ID.fullmatch(job_id):
                found.append((job_id, created.timestamp() if created else 0.0))
        return sorted(found)

    def _files(self, job_id: str) -> dict[str, bytes]:
        try:
            config_map = self.client.core_api.read_namespaced_config_map(
                files_config_map_name(job_id), self.config.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise _os_error(exc, f"ConfigMap {files_config_map_name(job_id)}") from None
        return {key: base64.b64decode(value) for key, value in (config_map.binary_data or {}).items()}

    def _file_paths(self, job_id: str) -> list[str]:
        # Keys map back to sub-paths only for matching; a mount matches by its own key.
        return [key.replace("--", "/") for key in self._files(job_id)]

    def _job_names(self, job_id: str) -> list[str]:
        jobs = self.client.batch_api.list_namespaced_job(
            self.config.namespace, label_selector=f"c2d/job-id={_check_job_id(job_id)}"
        )
        return [item.metadata.name for item in jobs.items]

    # --- running ------------------------------------------------------------------------------------

    def run(self, spec: PodSpec) -> PodResult:
        timer = self.client.timer
        started = timer()
        name = k8s_job_name(spec, self._suffix())
        try:
            job = job_manifest(spec, name, self.config, self._file_paths(spec.job_id))
        except (ValueError, OSError) as invalid:
            return self._result("StartError", None, str(invalid), started)
        try:
            self.client.create_namespaced_job_with_retries(job, self.config.namespace)
        except Exception as exc:  # the API refused the Job (quota, admission, RBAC)
            return self._result("StartError", None, f"the Job could not be created: {_explain(exc)}", started)
        log.info("created Job %s/%s for the %s stage", self.config.namespace, name, spec.component)
        try:
            return self._follow(spec, name, started)
        except (DagsterExecutionInterruptedError, KeyboardInterrupt):
            # The run was terminated: deleting the Job kills its pod; what it wrote stays on the volume.
            self._delete_job(name)
            raise
        finally:
            if not self.config.keep_finished_jobs:
                self._delete_job(name)

    def _follow(self, spec: PodSpec, name: str, started: float) -> PodResult:
        namespace = self.config.namespace
        timer, sleeper = self.client.timer, self.client.sleeper
        pod = None
        while True:
            pods = self.client.get_pods_in_job(name, namespace)
            pod = pods[0] if pods else None
            if pod is not None:
                problem = start_problem(pod, spec)
                if problem is not None:
                    return self._result(problem[0], None, problem[1], started)
                if _main_started(pod, spec):
                    break
            waited = timer() - started
            if waited > self.config.start_timeout:
                termination, message = pending_reason(pod, spec, waited)
                return self._result(termination, None, message, started)
            sleeper(self.config.poll_interval)

        pod_name = pod.metadata.name
        try:
            self.client.wait_for_pod(
                pod_name,
                namespace,
                wait_for_state=WaitForPodState.Terminated,
                # Both bounded: a pod deleted under us (the Job's own deadline) must not be waited for.
                pod_launch_timeout=spec.deadline_seconds + self.config.deadline_grace,
                wait_timeout=spec.deadline_seconds + self.config.deadline_grace,
                wait_time_between_attempts=self.config.poll_interval,
                start_time=timer(),
                ignore_containers={LAYOUT_CONTAINER},
            )
        except DagsterK8sError as failed:
            # Raised for any non-zero exit and for a vanished or overdue pod; the pod says which.
            log.debug("pod %s ended badly: %s", pod_name, str(failed)[:500])
        final = self._read_pod(pod_name)
        log_tail = self._log_tail(pod_name, spec.component)
        if final is None:
            if self._job_failed_for(name) == "DeadlineExceeded":
                message = f"the Job was stopped at its deadline of {spec.deadline_seconds} s"
                return self._result("DeadlineExceeded", None, message, started, log_tail=log_tail)
            return self._result(
                "Error", None, "the pod disappeared before its end could be read", started, log_tail=log_tail
            )
        if not _ended(final, spec):
            # Still running past its deadline plus grace: the kubelet did not stop it, so we do.
            self._delete_job(name)
            return self._result(
                "DeadlineExceeded",
                None,
                f"pod was stopped at its deadline of {spec.deadline_seconds} s",
                started,
                log_tail=log_tail,
            )
        termination, exit_code, message, termination_message = pod_outcome(final, spec)
        if termination == "Error" and ("No space left on device" in log_tail or "File too large" in log_tail):
            message += f"; its log shows a write refused for size: its disk limit is {spec.disk_bytes} bytes"
        return self._result(
            termination,
            exit_code,
            message,
            started,
            termination_message=termination_message,
            log_tail=log_tail,
        )

    def _read_pod(self, pod_name: str) -> Any | None:
        try:
            return self.client.get_pod_by_name(pod_name, self.config.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _job_failed_for(self, name: str) -> str | None:
        """The reason of the Job's Failed condition, if it has one."""
        try:
            status = self.client.get_job_status(name, self.config.namespace)
        except Exception:
            return None
        for condition in (status.conditions if status else None) or []:
            if condition.type == "Failed" and condition.status == "True":
                return str(condition.reason)
        return None

    def _log_tail(self, pod_name: str, container: str) -> str:
        try:
            text = self.client.retrieve_pod_logs(
                pod_name, self.config.namespace, container_name=container, tail_lines=LOG_TAIL_LINES
            )
        except Exception as exc:  # logs are a courtesy: their loss must not hide the pod's outcome
            log.debug("no log for pod %s: %s", pod_name, exc)
            return ""
        return text[-LOG_TAIL_LIMIT:]

    def _delete_job(self, name: str) -> None:
        try:
            self.client.delete_job(name, self.config.namespace)
        except Exception as exc:  # ttlSecondsAfterFinished and the cleanup sensor catch what is left
            log.warning("could not delete Job %s: %s", name, _explain(exc))

    def _create(self, create: Callable[[], Any]) -> None:
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:  # already there (a retried op): success
                raise _os_error(exc, "job volume") from None

    @staticmethod
    def _delete(delete: Callable[[], Any]) -> None:
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _result(
        self,
        termination: Termination,
        exit_code: int | None,
        message: str,
        started: float,
        *,
        termination_message: str = "",
        log_tail: str = "",
    ) -> PodResult:
        return PodResult(
            termination=termination,
            exit_code=exit_code,
            message=message,
            termination_message=termination_message,
            log_tail=log_tail,
            started_at=started,
            finished_at=self.client.timer(),
        )


def _ended(pod: Any, spec: PodSpec) -> bool:
    if pod.status.phase in ("Succeeded", "Failed"):
        return True
    return any(
        s.name == spec.component and s.state is not None and s.state.terminated is not None
        for s in pod.status.container_statuses or []
    )


def _explain(exc: BaseException) -> str:
    api = exc if isinstance(exc, ApiException) else getattr(exc, "k8s_api_exception", None)
    if isinstance(api, ApiException):
        body = api.body[:300] if isinstance(api.body, str) else ""
        return f"{api.status} {api.reason}: {body}".strip(": ")
    return f"{type(exc).__name__}: {exc}"[:400]


def _os_error(exc: ApiException, what: str) -> OSError:
    """API refusals around the volume as OSError: the ops report those as volume creation failures."""
    return OSError(errno.EIO, f"{what}: Kubernetes API answered {exc.status} {exc.reason}")


def default_client() -> DagsterKubernetesClient:
    """The production client (in-cluster credentials, or the kubeconfig outside a cluster)."""
    import kubernetes.config

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return DagsterKubernetesClient.production_client()
