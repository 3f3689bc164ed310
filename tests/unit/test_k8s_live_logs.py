"""K8sPodRunner.read_log against a FAKE Kubernetes API (tests/k8s_fakes.py; no cluster ran): a running
pod's log read through the pod-log API while the runner waits for it, and an ended pod's kept for the
follower's last read after its Job is deleted (c2d_defs.pod_output)."""

from __future__ import annotations

from k8s_fakes import FakeClock, FakeKubernetesApi, exited, running

from c2d_defs.k8s_manifests import K8sRunnerConfig
from c2d_defs.k8s_pod_runner import K8sPodRunner
from c2d_defs.pod_output import run_followed
from c2d_defs.pod_runner import Mount, PodSpec
from c2d_defs.pods import layout

JOB_ID = "e" * 32
CONFIG = K8sRunnerConfig(namespace="jobs", storage_class="fast", start_timeout=120, poll_interval=2)


def _spec() -> PodSpec:
    return PodSpec(
        job_id=JOB_ID,
        component="algorithm",
        environment_id="small",
        image="python:3.11",
        command=["python", "/data/transformations/algorithm"],
        mounts=[
            Mount(mount_path="/data", sub_path="data", read_only=True),
            Mount(mount_path="/data/logs", sub_path="data/logs", read_only=False),
        ],
        memory_bytes=512 * 1024**2,
        disk_bytes=1024**3,
        deadline_seconds=60,
        log_sub_path=layout.ALGORITHM_LOG,
    )


def test_a_running_pods_log_is_read_while_the_runner_waits_and_kept_after_its_job_is_gone() -> None:
    clock = FakeClock()
    fake = FakeKubernetesApi(
        clock=clock,
        script_for=lambda job: [(0, running()), (10, exited(0))],
        log_for=lambda job: "first\nsecond\n",
    )
    runner = K8sPodRunner(fake.client(), CONFIG, suffix=lambda: "abcde")
    seen_while_running: list[bytes] = []

    def meanwhile(_now: float) -> None:
        if fake.jobs and not seen_while_running:
            seen_while_running.append(runner.read_log(JOB_ID, layout.ALGORITHM_LOG, 6, 100))

    clock.on_sleep = meanwhile
    lines: list[str] = []
    result = run_followed(runner, _spec(), sink=lines.append)
    assert result.termination == "Completed"
    assert seen_while_running == [b"second\n"]  # from an offset, through limit_bytes
    asked = fake.called("read_namespaced_pod_log")
    assert any(call.get("limit_bytes") == 106 and call.get("container") == "algorithm" for call in asked)
    # The Job is deleted, yet the follower's last read got the whole log.
    assert fake.called("delete_namespaced_job")
    assert lines == ["[algorithm] first\n", "[algorithm] second\n"]
    assert runner.read_log(JOB_ID, layout.ALGORITHM_LOG, 0, 5) == b"first"
    runner.release_volume(JOB_ID)
    assert runner.read_log(JOB_ID, layout.ALGORITHM_LOG, 0, 5) == b""


def test_no_pod_no_log() -> None:
    fake = FakeKubernetesApi(clock=FakeClock())
    runner = K8sPodRunner(fake.client(), CONFIG)
    assert runner.read_log(JOB_ID, layout.ALGORITHM_LOG, 0, 100) == b""
