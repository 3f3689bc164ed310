"""Runs pod specs as Kubernetes Jobs through dagster-k8s: the production `PodRunner`.

Each job gets a PVC (the job volume, at /data) and a ConfigMap (the files `write_file` puts there:
the workflow document); each stage is a `batch/v1` Job built by dagster-k8s's
`construct_dagster_k8s_job` and followed with its `DagsterKubernetesClient` — the builder and client
behind `execute_k8s_job`. The function itself is not called, because it cannot do what a stage
needs (see docs/deploy-kubernetes.md, "Why not execute_k8s_job"): it hard-codes its API client,
waits up to a day for a pod that cannot be scheduled, raises without the exit code, OOM flag or
termination message, and needs an op context where a runner only gets a spec.

The objects it submits are built in `c2d_defs.k8s_manifests`; what a pod's status means is read in
`c2d_defs.k8s_pod_status`.
"""

from __future__ import annotations

import base64
import errno
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_k8s.client import DagsterK8sError, DagsterKubernetesClient, WaitForPodState
from kubernetes.client.rest import ApiException

from c2d_core.live_logs import LIVE_LOG_CAP, STEP_LOG_CAP
from c2d_core.workflow import JOB_ID_PATTERN
from c2d_defs.k8s_manifests import (
    LAYOUT_CONTAINER,
    K8sRunnerConfig,
    checked_job_id,
    file_key,
    files_config_map_name,
    files_manifest,
    job_manifest,
    k8s_job_name,
    volume_claim_name,
    volume_manifest,
)
from c2d_defs.k8s_pod_status import (
    main_container_started,
    pending_reason,
    pod_ended,
    pod_outcome,
    start_problem,
)
from c2d_defs.pod_runner import LOG_TAIL_LIMIT, PodResult, PodRunner, PodSpec, Termination

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
# A ConfigMap holds at most 1 MiB; the workflow document is a few KiB.
FILES_LIMIT = 1000 * 1024
# What of an ended pod's log is kept for the follower's last read (c2d_defs.pod_output): no more than
# it passes on (its caps), plus a read.
ENDED_LOG_LIMIT = max(LIVE_LOG_CAP, STEP_LOG_CAP) + 64 * 1024


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
        # (job id, log sub-path) -> (pod, container) of a pod that runs, and the log of one that ended
        # (its Job is deleted at once), for `read_log` from the follower's thread.
        self._live_pods: dict[tuple[str, str], tuple[str, str]] = {}
        self._ended_logs: dict[tuple[str, str], bytes] = {}
        self._live_lock = threading.Lock()

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
        with self._live_lock:
            for key in [key for key in self._ended_logs if key[0] == job_id]:
                del self._ended_logs[key]
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
            if JOB_ID_PATTERN.fullmatch(job_id):
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
            self.config.namespace, label_selector=f"c2d/job-id={checked_job_id(job_id)}"
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
        with self._live_lock:
            self._ended_logs.pop((spec.job_id, spec.log_sub_path), None)
        try:
            return self._follow(spec, name, started)
        except (DagsterExecutionInterruptedError, KeyboardInterrupt):
            # The run was terminated: deleting the Job kills its pod; what it wrote stays on the volume.
            self._end_live_log(spec)
            self._delete_job(name)
            raise
        finally:
            self._end_live_log(spec)
            if not self.config.keep_finished_jobs:
                self._delete_job(name)

    def read_log(self, job_id: str, sub_path: str, offset: int, limit: int) -> bytes:
        """The pod's log through the API (its container's output is the log: the wrapper tees it):
        Kubernetes reads a log from its start, so the first `offset + limit` bytes are asked for."""
        key = (job_id, sub_path)
        with self._live_lock:
            ended, live = self._ended_logs.get(key), self._live_pods.get(key)
        if ended is not None:
            return ended[offset : offset + limit]
        if live is None:
            return b""
        return self._pod_log(*live, offset + limit)[offset : offset + limit]

    def _pod_log(self, pod_name: str, container: str, limit: int) -> bytes:
        try:
            response = self.client.core_api.read_namespaced_pod_log(
                pod_name,
                self.config.namespace,
                container=container,
                limit_bytes=limit,
                _preload_content=False,
            )
            return bytes(response.data)
        except Exception as exc:  # a live log is a courtesy: the pod's outcome never depends on it
            log.debug("no live log for pod %s: %s", pod_name, exc)
            return b""

    def _end_live_log(self, spec: PodSpec) -> None:
        """Keep the ended pod's log (bounded) before its Job goes, for the follower's last read."""
        key = (spec.job_id, spec.log_sub_path)
        with self._live_lock:
            live = self._live_pods.pop(key, None)
        if live is not None:
            content = self._pod_log(*live, ENDED_LOG_LIMIT)
            with self._live_lock:
                self._ended_logs[key] = content

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
                if main_container_started(pod, spec):
                    with self._live_lock:
                        self._live_pods[(spec.job_id, spec.log_sub_path)] = (
                            pod.metadata.name,
                            spec.component,
                        )
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
        if not pod_ended(final, spec):
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
