"""K8sPodRunner's control flow against a FAKE Kubernetes API (tests/k8s_fakes.py): no cluster ran.

dagster-k8s's real `DagsterKubernetesClient` sits between the runner and the fake, with the fake's
clock as timer and sleeper, so timeouts are exercised without waiting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from dagster._core.errors import DagsterExecutionInterruptedError
from k8s_fakes import (
    FakeClock,
    FakeKubernetesApi,
    deadline_exceeded,
    exited,
    running,
    unschedulable,
    waiting,
)
from kubernetes.client.rest import ApiException

from c2d_defs.k8s_manifests import K8sRunnerConfig
from c2d_defs.k8s_pod_runner import K8sPodRunner
from c2d_defs.k8s_resources import orphaned_volumes
from c2d_defs.pod_runner import Mount, PodSpec
from c2d_defs.pods import layout

JOB_ID = "d" * 32
CONFIG = K8sRunnerConfig(namespace="jobs", storage_class="fast", start_timeout=120, poll_interval=2)


def _spec(component: str = "algorithm", deadline: int = 60, **extra) -> PodSpec:
    fields = {
        "job_id": JOB_ID,
        "component": component,
        "environment_id": "small",
        "image": "python:3.11",
        "command": ["python", "/data/transformations/algorithm"],
        "mounts": [
            Mount(mount_path="/data", sub_path="data", read_only=True),
            Mount(mount_path="/data/outputs", sub_path="data/outputs", read_only=False),
            Mount(mount_path="/data/logs", sub_path="data/logs", read_only=False),
        ],
        "memory_bytes": 512 * 1024**2,
        "disk_bytes": 1024**3,
        "deadline_seconds": deadline,
        "log_sub_path": layout.ALGORITHM_LOG,
    }
    fields.update(extra)
    return PodSpec(**fields)


def _runner(**fake_options) -> tuple[K8sPodRunner, FakeKubernetesApi, FakeClock]:
    clock = FakeClock()
    fake = FakeKubernetesApi(clock=clock, **fake_options)
    return K8sPodRunner(fake.client(), CONFIG, suffix=lambda: "abcde"), fake, clock


def _script(*steps):
    return lambda job: list(steps)


def test_a_pod_that_exits_0_completes_with_its_report_and_log_and_its_job_is_deleted() -> None:
    runner, fake, _ = _runner(
        script_for=_script(
            (0, waiting("ContainerCreating")), (4, running()), (20, exited(0, message='{"status": 30}'))
        ),
        log_for=lambda job: "fetched 2 files\n",
    )
    result = runner.run(_spec())
    assert result.termination == "Completed" and result.exit_code == 0
    assert result.termination_message == '{"status": 30}'
    assert result.log_tail == "fetched 2 files\n"
    assert 20 <= result.duration <= 40
    [created] = fake.called("create_namespaced_job")
    assert created == {"namespace": "jobs", "name": f"c2d-{JOB_ID}-algorithm-abcde"}
    assert fake.called("delete_namespaced_job") == [
        {"name": f"c2d-{JOB_ID}-algorithm-abcde", "namespace": "jobs"}
    ]
    assert fake.jobs == {}
    log_reads = fake.called("read_namespaced_pod_log")
    assert log_reads[-1]["container"] == "algorithm"


def test_a_failing_algorithm_reports_its_exit_code() -> None:
    runner, _, _ = _runner(script_for=_script((0, running()), (3, exited(3))))
    result = runner.run(_spec())
    assert (result.termination, result.exit_code) == ("Error", 3)
    assert result.message == "pod exited with code 3"


def test_a_killed_algorithm_names_the_signal() -> None:
    runner, _, _ = _runner(script_for=_script((0, running()), (3, exited(137))))
    result = runner.run(_spec())
    assert result.termination == "Error" and "SIGKILL" in result.message


def test_out_of_memory_is_reported_as_oomkilled() -> None:
    runner, _, _ = _runner(script_for=_script((0, running()), (3, exited(137, reason="OOMKilled"))))
    result = runner.run(_spec())
    assert (result.termination, result.exit_code) == ("OOMKilled", 137)
    assert str(512 * 1024**2) in result.message


def test_the_pods_deadline_is_reported_as_deadline_exceeded() -> None:
    runner, _, _ = _runner(script_for=_script((0, running()), (61, deadline_exceeded())))
    result = runner.run(_spec(deadline=60))
    assert result.termination == "DeadlineExceeded"
    assert "60 s" in result.message


def test_a_pod_the_kubelet_fails_to_stop_is_stopped_by_the_runner() -> None:
    runner, fake, clock = _runner(script_for=_script((0, running())))
    started = clock.now
    result = runner.run(_spec(deadline=60))
    assert result.termination == "DeadlineExceeded"
    assert clock.now - started <= 60 + CONFIG.deadline_grace + 3 * CONFIG.poll_interval
    assert fake.jobs == {}


def test_an_unschedulable_pod_fails_at_the_start_timeout_not_later() -> None:
    runner, fake, clock = _runner(script_for=_script((0, unschedulable())))
    started = clock.now
    result = runner.run(_spec())
    assert result.termination == "StartError"
    assert "could not be scheduled" in result.message and "Insufficient memory" in result.message
    assert CONFIG.start_timeout <= clock.now - started <= CONFIG.start_timeout + CONFIG.poll_interval
    assert fake.jobs == {}, "the pending Job is deleted"


def test_an_image_that_keeps_failing_to_pull_is_image_not_found() -> None:
    runner, _, clock = _runner(script_for=_script((0, waiting("ImagePullBackOff", "manifest unknown"))))
    started = clock.now
    result = runner.run(_spec())
    assert result.termination == "ImageNotFound"
    assert "ImagePullBackOff" in result.message and "manifest unknown" in result.message
    assert clock.now - started <= CONFIG.start_timeout + CONFIG.poll_interval


def test_a_slow_pull_that_succeeds_within_the_start_timeout_is_fine() -> None:
    runner, _, _ = _runner(script_for=_script((0, waiting("ErrImagePull")), (30, running()), (40, exited(0))))
    assert runner.run(_spec()).termination == "Completed"


def test_an_invalid_image_name_fails_at_once() -> None:
    runner, _, clock = _runner(script_for=_script((0, waiting("InvalidImageName", "bad ref"))))
    started = clock.now
    result = runner.run(_spec())
    assert result.termination == "ImageNotFound"
    assert clock.now - started < 5


def test_a_refused_job_is_a_start_error() -> None:
    runner, _, _ = _runner(refuse_jobs=ApiException(status=403, reason="Forbidden"))
    result = runner.run(_spec())
    assert result.termination == "StartError" and "could not be created" in result.message


def test_an_unconfigured_secret_is_a_start_error_before_anything_is_created() -> None:
    runner, fake, _ = _runner()
    result = runner.run(_spec(component="configure", secrets={"other-key": "/secrets/x"}))
    assert result.termination == "StartError" and "other-key" in result.message
    assert fake.called("create_namespaced_job") == []


def test_a_terminated_run_deletes_the_job_and_propagates() -> None:
    runner, fake, clock = _runner(script_for=_script((0, running())))
    start = clock.now

    def interrupt(now: float) -> None:
        if now - start > 10:
            raise DagsterExecutionInterruptedError()

    clock.on_sleep = interrupt
    with pytest.raises(DagsterExecutionInterruptedError):
        runner.run(_spec())
    assert fake.jobs == {}, "deleting the Job kills the algorithm"


def test_volume_lifecycle_pvc_files_and_cleanup() -> None:
    runner, fake, _ = _runner()
    runner.prepare_volume(JOB_ID, 3 * 1024**3)
    runner.prepare_volume(JOB_ID, 3 * 1024**3)  # a retried op: already there is success
    claim = fake.claims[f"c2d-{JOB_ID}"]
    assert claim.spec.storage_class_name == "fast"
    assert claim.spec.resources.requests == {"storage": "3072Mi"}

    runner.write_file(JOB_ID, "pod/workflow.json", b'{"jobId": "x"}')
    runner.write_file(JOB_ID, "pod/extra.txt", b"2")
    config_map = fake.config_maps[f"c2d-{JOB_ID}-files"]
    assert set(config_map.binary_data) == {"pod--workflow.json", "pod--extra.txt"}

    spec = _spec(
        component="configure",
        mounts=[
            Mount(mount_path="/data", sub_path="data", read_only=False),
            Mount(mount_path="/data/adminlogs", sub_path="adminlogs", read_only=False),
            Mount(mount_path="/workflow.json", sub_path="pod/workflow.json"),
        ],
        log_sub_path=layout.CONFIGURE_LOG,
    )
    runner_keep = K8sPodRunner(fake.client(), K8sRunnerConfig(namespace="jobs", keep_finished_jobs=True))
    assert runner_keep.run(spec).termination == "Completed"
    [submitted] = fake.submitted
    volumes = {v.name: v for v in submitted.spec.template.spec.volumes}
    assert volumes["job-files"].config_map.name == f"c2d-{JOB_ID}-files"
    assert runner.volumes() == [(JOB_ID, pytest.approx(fake.clock.now, abs=1000))]

    runner.release_volume(JOB_ID)
    runner.release_volume(JOB_ID)  # idempotent
    assert fake.claims == {} and fake.config_maps == {} and fake.jobs == {}


def test_write_file_refuses_more_than_a_config_map_holds() -> None:
    runner, _, _ = _runner()
    with pytest.raises(OSError, match="exceed"):
        runner.write_file(JOB_ID, "pod/workflow.json", b"x" * (1024 * 1024))


def test_api_refusal_on_the_volume_is_an_os_error_the_ops_report() -> None:
    runner, fake, _ = _runner()

    def refuse(*args, **kwargs):
        raise ApiException(status=403, reason="Forbidden")

    fake.create_namespaced_persistent_volume_claim = refuse  # type: ignore[method-assign]
    with pytest.raises(OSError, match="403"):
        runner.prepare_volume(JOB_ID, 1024**3)


def test_cleanup_picks_volumes_whose_runs_all_ended_past_the_grace() -> None:
    now = 10_000.0
    finished = SimpleNamespace(is_finished=True, tags={"c2d/date_finished": str(now - 5000)})
    recent = SimpleNamespace(is_finished=True, tags={"c2d/date_finished": str(now - 10)})
    going = SimpleNamespace(is_finished=False, tags={})
    kept = SimpleNamespace(is_finished=True, tags={**finished.tags, "c2d/volume_kept": "1"})
    runs = {"a" * 32: [finished], "b" * 32: [going], "c" * 32: [recent], "d" * 32: [kept], "e" * 32: []}
    volumes = [("a" * 32, 0.0), ("b" * 32, 0.0), ("c" * 32, 0.0), ("d" * 32, 0.0), ("e" * 32, 0.0)]
    volumes.append(("f" * 32, now - 1))
    assert orphaned_volumes(volumes, lambda job_id: runs.get(job_id, []), now, 900) == ["a" * 32, "e" * 32]


def test_the_k8s_code_location_loads_without_a_cluster() -> None:
    env = {**os.environ, "C2D_DEPLOYMENT": "k8s", "KUBERNETES_SERVICE_HOST": ""}
    code = (
        "from c2d_defs.definitions import defs\n"
        "job = defs.resolve_job_def('compute_job')\n"
        "assert {'pod_runner', 'result_store', 'environments'} <= set(job.resource_defs)\n"
        "print(type(defs.resources['pod_runner']).__name__)\n"
        "print(sorted(s.name for s in defs.sensors))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sensors = "['k8s_volume_cleanup', 'queue_watchdog', 'results_expiry', 'review_expiry', 'stage_watchdog']"
    assert done.stdout.split("\n")[:2] == ["K8sPodRunnerResource", sensors]


def test_the_local_code_location_does_not_import_dagster_k8s() -> None:
    env = {**os.environ, "C2D_DEPLOYMENT": "local"}
    code = "import sys\nfrom c2d_defs.definitions import defs\nprint('dagster_k8s' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
