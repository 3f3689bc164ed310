"""A FAKE Kubernetes API for unit tests: no cluster is involved anywhere in these tests.

`FakeKubernetesApi` stands in for both `BatchV1Api` and `CoreV1Api` under dagster-k8s's real
`DagsterKubernetesClient`. It keeps objects in dicts and plays each Job's pod through a scripted
timeline on a `FakeClock`, which is also the client's timer and sleeper: waiting costs no time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from dagster_k8s.client import DagsterKubernetesClient
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException


class FakeClock:
    """Seconds since an arbitrary start; `sleep` advances it and may run a hook (to interrupt)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.on_sleep: Callable[[float], None] | None = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


# --- Pod states a script can put a pod in ------------------------------------------------------------


@dataclass(frozen=True)
class PodState:
    phase: str
    container: k8s.V1ContainerState | None = None
    reason: str | None = None
    message: str | None = None
    unschedulable: bool = False


def unschedulable() -> PodState:
    return PodState("Pending", unschedulable=True)


def waiting(reason: str, message: str = "") -> PodState:
    return PodState(
        "Pending", k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=reason, message=message))
    )


def running() -> PodState:
    return PodState("Running", k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()))


def exited(code: int, reason: str | None = None, message: str = "") -> PodState:
    reason = reason or ("Completed" if code == 0 else "Error")
    state = k8s.V1ContainerState(
        terminated=k8s.V1ContainerStateTerminated(exit_code=code, reason=reason, message=message or None)
    )
    return PodState("Succeeded" if code == 0 else "Failed", state)


def deadline_exceeded() -> PodState:
    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=137, reason="Error"))
    return PodState(
        "Failed",
        state,
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
    )


# A script: (seconds after the Job was created, state from then on), in order.
Script = list[tuple[float, PodState]]


@dataclass
class _FakeJob:
    body: dict[str, Any]
    created_at: float
    script: Script
    pod_name: str
    log: str


@dataclass
class FakeKubernetesApi:
    """Both API groups dagster-k8s calls, recording every call in `calls` as (method, kwargs)."""

    clock: FakeClock
    # Which timeline a new Job's pod follows, chosen from the submitted Job.
    script_for: Callable[[k8s.V1Job], Script] = lambda job: [(0.0, running()), (5.0, exited(0))]
    log_for: Callable[[k8s.V1Job], str] = lambda job: "pod output\n"
    refuse_jobs: ApiException | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    jobs: dict[str, _FakeJob] = field(default_factory=dict)
    claims: dict[str, k8s.V1PersistentVolumeClaim] = field(default_factory=dict)
    config_maps: dict[str, k8s.V1ConfigMap] = field(default_factory=dict)
    submitted: list[k8s.V1Job] = field(default_factory=list)

    def client(self) -> DagsterKubernetesClient:
        return DagsterKubernetesClient(
            batch_api=self,
            core_api=self,
            logger=lambda _msg: None,
            sleeper=self.clock.sleep,
            timer=self.clock.time,
        )

    def _record(self, method: str, **kwargs: Any) -> None:
        self.calls.append((method, kwargs))

    def called(self, method: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == method]

    # --- batch/v1 Jobs ---------------------------------------------------------------------------------

    def create_namespaced_job(self, namespace: str, body: k8s.V1Job, **kwargs: Any) -> k8s.V1Job:
        self._record("create_namespaced_job", namespace=namespace, name=body.metadata.name)
        if self.refuse_jobs is not None:
            raise self.refuse_jobs
        name = body.metadata.name
        if name in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.submitted.append(copy.deepcopy(body))
        self.jobs[name] = _FakeJob(
            body=k8s.ApiClient().sanitize_for_serialization(body),
            created_at=self.clock.now,
            script=self.script_for(body),
            pod_name=f"{name}-x7k2q",
            log=self.log_for(body),
        )
        return body

    def list_namespaced_job(
        self, namespace: str, label_selector: str = "", field_selector: str = "", **_: Any
    ) -> Any:
        self._record("list_namespaced_job", namespace=namespace, label_selector=label_selector)
        items = []
        for name, job in self.jobs.items():
            labels = job.body["metadata"].get("labels", {})
            if field_selector and field_selector != f"metadata.name={name}":
                continue
            if label_selector and not _matches(labels, label_selector):
                continue
            items.append(
                k8s.V1Job(metadata=k8s.V1ObjectMeta(name=name, labels=labels), status=self._job_status(job))
            )
        return k8s.V1JobList(items=items)

    def read_namespaced_job_status(self, name: str, namespace: str, **_: Any) -> k8s.V1Job:
        job = self.jobs.get(name)
        if job is None:
            raise ApiException(status=404, reason="NotFound")
        return k8s.V1Job(metadata=k8s.V1ObjectMeta(name=name), status=self._job_status(job))

    def delete_namespaced_job(self, name: str, namespace: str, **_: Any) -> None:
        self._record("delete_namespaced_job", name=name, namespace=namespace)
        if self.jobs.pop(name, None) is None:
            raise ApiException(status=404, reason="NotFound")

    def _job_status(self, job: _FakeJob) -> k8s.V1JobStatus:
        state = self._state(job)
        if state.reason == "DeadlineExceeded":
            condition = k8s.V1JobCondition(type="Failed", status="True", reason="DeadlineExceeded")
            return k8s.V1JobStatus(failed=1, conditions=[condition])
        if state.phase == "Succeeded":
            return k8s.V1JobStatus(succeeded=1)
        if state.phase == "Failed":
            return k8s.V1JobStatus(failed=1)
        return k8s.V1JobStatus(active=1)

    # --- core/v1 Pods ----------------------------------------------------------------------------------

    def _state(self, job: _FakeJob) -> PodState:
        elapsed = self.clock.now - job.created_at
        current = job.script[0][1]
        for at, state in job.script:
            if elapsed >= at:
                current = state
        return current

    def _pod(self, job: _FakeJob) -> k8s.V1Pod:
        state = self._state(job)
        container = job.body["spec"]["template"]["spec"]["containers"][0]["name"]
        statuses = None
        init_statuses = None
        conditions = None
        if state.unschedulable:
            conditions = [
                k8s.V1PodCondition(
                    type="PodScheduled",
                    status="False",
                    reason="Unschedulable",
                    message="0/3 nodes are available: 3 Insufficient memory.",
                )
            ]
        else:
            init_done = k8s.V1ContainerState(
                terminated=k8s.V1ContainerStateTerminated(exit_code=0, reason="Completed")
            )
            init_statuses = [_status("volume-layout", init_done)]
            statuses = [_status(container, state.container)]
        return k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=job.pod_name, labels={"job-name": job.body["metadata"]["name"]}),
            status=k8s.V1PodStatus(
                phase=state.phase,
                reason=state.reason,
                message=state.message,
                conditions=conditions,
                container_statuses=statuses,
                init_container_statuses=init_statuses,
            ),
        )

    def list_namespaced_pod(
        self, namespace: str, label_selector: str = "", field_selector: str = "", **_: Any
    ) -> Any:
        items = []
        for name, job in self.jobs.items():
            if label_selector and label_selector != f"job-name={name}":
                continue
            if field_selector and field_selector != f"metadata.name={job.pod_name}":
                continue
            items.append(self._pod(job))
        return k8s.V1PodList(items=items)

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> k8s.V1Pod:
        for job in self.jobs.values():
            if job.pod_name == name:
                return self._pod(job)
        raise ApiException(status=404, reason="NotFound")

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self._record("read_namespaced_pod_log", name=name, **kwargs)
        for job in self.jobs.values():
            if job.pod_name == name:
                return SimpleNamespace(data=job.log.encode())
        raise ApiException(status=404, reason="NotFound")

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self._record("delete_namespaced_pod", name=name)
        raise ApiException(status=404, reason="NotFound")  # the fake deletes pods with their Job

    def list_namespaced_event(self, *args: Any, **kwargs: Any) -> Any:
        return k8s.CoreV1EventList(items=[])

    # --- core/v1 PVCs and ConfigMaps -------------------------------------------------------------------

    def create_namespaced_persistent_volume_claim(self, namespace: str, body: Any, **_: Any) -> Any:
        self._record(
            "create_namespaced_persistent_volume_claim", namespace=namespace, name=body.metadata.name
        )
        if body.metadata.name in self.claims:
            raise ApiException(status=409, reason="AlreadyExists")
        body.metadata.creation_timestamp = _datetime(self.clock.now)
        self.claims[body.metadata.name] = body
        return body

    def list_namespaced_persistent_volume_claim(
        self, namespace: str, label_selector: str = "", **_: Any
    ) -> Any:
        items = [c for c in self.claims.values() if _matches(c.metadata.labels or {}, label_selector)]
        return k8s.V1PersistentVolumeClaimList(items=items)

    def read_namespaced_persistent_volume_claim(self, name: str, namespace: str, **_: Any) -> Any:
        if name not in self.claims:
            raise ApiException(status=404, reason="NotFound")
        return self.claims[name]

    def delete_namespaced_persistent_volume_claim(self, name: str, namespace: str, **_: Any) -> None:
        self._record("delete_namespaced_persistent_volume_claim", name=name)
        if self.claims.pop(name, None) is None:
            raise ApiException(status=404, reason="NotFound")

    def create_namespaced_config_map(self, namespace: str, body: Any, **_: Any) -> Any:
        self._record("create_namespaced_config_map", name=body.metadata.name)
        if body.metadata.name in self.config_maps:
            raise ApiException(status=409, reason="AlreadyExists")
        self.config_maps[body.metadata.name] = copy.deepcopy(body)
        return body

    def replace_namespaced_config_map(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        self._record("replace_namespaced_config_map", name=name)
        self.config_maps[name] = copy.deepcopy(body)
        return body

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Any:
        if name not in self.config_maps:
            raise ApiException(status=404, reason="NotFound")
        return self.config_maps[name]

    def delete_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> None:
        self._record("delete_namespaced_config_map", name=name)
        if self.config_maps.pop(name, None) is None:
            raise ApiException(status=404, reason="NotFound")


def _status(name: str, state: k8s.V1ContainerState | None) -> k8s.V1ContainerStatus:
    return k8s.V1ContainerStatus(
        name=name,
        state=state,
        ready=bool(state and state.running),
        restart_count=0,
        image="fake",
        image_id="",
    )


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _datetime(seconds: float) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
