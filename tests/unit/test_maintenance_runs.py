"""Sensors decide, jobs act: the queue watchdog's and the k8s volume cleanup's ticks only read and ask for
one run; a retried tick asks for the same run key, none while that run is pending, and a new one after
it failed; the requested job (run in process on the same instance, as the daemon would launch it) does
the work. Also which errors the maintenance ops retry. Real Dagster runs in an ephemeral instance; the
Kubernetes API is the fake of tests/k8s_fakes.py (no cluster runs here)."""

from __future__ import annotations

import time
import types
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from engine_kit import run_requested_job

from c2d_core import engine
from c2d_defs import maintenance
from c2d_defs.jobs import queue_expiry_job, results_expiry_job
from c2d_defs.maintenance import (
    BATCH,
    MAINTENANCE,
    REASON,
    TransientMaintenanceError,
    act_on_each,
    is_transient,
)
from c2d_defs.queue_watchdog import queue_watchdog
from c2d_defs.resources import ComputeEnvironments

CONSUMER_TAGS = {engine.ENVIRONMENT, engine.OWNER, engine.JOB_ID, engine.AGREEMENT_ID}
# Where a queued run would be launched from (Dagster requires one for QUEUED runs; nothing connects).
ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(
        code_location_origin=GrpcServerCodeLocationOrigin(
            host="127.0.0.1", port=1, location_name=engine.LOCATION
        ),
        repository_name=engine.REPOSITORY,
    ),
    job_name=engine.JOB_NAME,
)


def _queued(instance: dg.DagsterInstance, env_id: str) -> str:
    run = dg.DagsterRun(
        job_name=engine.JOB_NAME,
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.QUEUED,
        tags={engine.JOB_ID: uuid.uuid4().hex, engine.ENVIRONMENT: env_id},
        remote_job_origin=ORIGIN,
    )
    instance.add_run(run)
    return run.run_id


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float, *modules: str) -> None:
    """Move the clock of `modules` forward (the queue limits are seconds after a run's creation)."""
    shifted = types.SimpleNamespace(time=lambda: time.time() + seconds)
    for module in modules:
        monkeypatch.setattr(f"{module}.time", shifted)


def _maintenance_run(instance: dg.DagsterInstance, job_name: str, request: dg.RunRequest) -> str:
    """The run the daemon creates for `request` (not started yet)."""
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name=job_name,
            run_id=run_id,
            status=dg.DagsterRunStatus.NOT_STARTED,
            run_config=dict(request.run_config),
            tags=dict(request.tags),
        )
    )
    return run_id


def test_the_queue_tick_cancels_nothing_and_its_job_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs_file = tmp_path / "environments.yaml"
    envs_file.write_text(
        "environments:\n  - {id: strict, maxQueueWait: 3}\n  - {id: patient, maxQueueWait: 0}\n"
    )
    monkeypatch.setenv("C2D_MAX_QUEUE_WAIT", "0")
    environments = ComputeEnvironments(environments_file=str(envs_file))
    with dg.DagsterInstance.ephemeral() as instance:
        strict, patient = _queued(instance, "strict"), _queued(instance, "patient")
        context = dg.build_sensor_context(instance=instance, resources={"environments": environments})
        assert isinstance(queue_watchdog(context), dg.SkipReason)  # nobody waited 3 s yet
        _later(monkeypatch, 10, "c2d_defs.queue_watchdog", "c2d_defs.jobs.maintenance")

        request = queue_watchdog(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_config == {"ops": {"expire_queued": {"config": {"targets": [strict]}}}}
        assert request.tags[MAINTENANCE] == "queue_expiry" and "1 compute job(s)" in request.tags[REASON]
        # Not one of the environment's maxJobs (the queue's limits key on c2d/environment), no consumer's.
        assert not CONSUMER_TAGS & set(request.tags)
        for run_id in (strict, patient):  # the tick itself cancelled nothing
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.QUEUED  # type: ignore[union-attr]
        # A retried tick asks for the same run key (Dagster launches a run key once) ...
        again = queue_watchdog(context)
        assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key
        # ... and none at all once the daemon created that run.
        pending = _maintenance_run(instance, "queue_expiry_job", request)
        assert isinstance(queue_watchdog(context), dg.SkipReason)
        instance.delete_run(pending)

        result = run_requested_job(request, queue_expiry_job, instance, {"environments": environments})
        assert result.success
        ended = instance.get_run_by_id(strict)
        assert ended is not None and ended.status == dg.DagsterRunStatus.CANCELED
        assert ended.tags[engine.STATUS] == "2" and "more than 3 s" in ended.tags[engine.STATUS_DETAIL]
        assert instance.get_run_by_id(patient).status == dg.DagsterRunStatus.QUEUED  # type: ignore[union-attr]
        maintenance_run = instance.get_run_by_id(result.run_id)
        assert maintenance_run is not None and maintenance_run.tags["c2d/kind"] == "maintenance"
        assert not CONSUMER_TAGS & set(maintenance_run.tags)
        logged = [entry.message for entry in instance.all_logs(result.run_id)]
        assert any(f"ended the queued compute run {strict}" in (message or "") for message in logged)
        skip = queue_watchdog(context)
        assert isinstance(skip, dg.SkipReason) and "0 job(s)" in str(skip.skip_message)


def test_a_batch_whose_run_failed_is_asked_for_again_under_a_new_key() -> None:
    with dg.DagsterInstance.ephemeral() as instance:

        def ask() -> dg.RunRequest | None:
            return maintenance.request(
                instance,
                what="w",
                job_name="results_expiry_job",
                op_name="expire_results",
                targets=["b", "a"],
                reason="two",
            )

        first = ask()
        assert first is not None and first.run_key == ask().run_key  # type: ignore[union-attr]
        run_id = _maintenance_run(instance, "results_expiry_job", first)
        assert ask() is None
        instance.report_run_failed(instance.get_run_by_id(run_id))  # type: ignore[arg-type]
        retry = ask()
        assert retry is not None and retry.run_key != first.run_key and retry.tags[BATCH] == first.tags[BATCH]
        # A batch that always fails is asked for MAX_ATTEMPTS times, not at every tick for ever.
        for _ in range(maintenance.MAX_ATTEMPTS - 1):
            again = ask()
            assert again is not None
            instance.report_run_failed(
                instance.get_run_by_id(_maintenance_run(instance, "results_expiry_job", again))
            )  # type: ignore[arg-type]
        assert ask() is None
        # Targets another run is still acting on are left to it; only the new ones are asked for.
        other = maintenance.request(
            instance,
            what="w",
            job_name="results_expiry_job",
            op_name="expire_results",
            targets=["a", "c"],
            reason="two",
        )
        assert other is not None
        _maintenance_run(instance, "results_expiry_job", other)
        third = maintenance.request(
            instance,
            what="w",
            job_name="results_expiry_job",
            op_name="expire_results",
            targets=["a", "c", "d"],
            reason="three",
        )
        assert third is not None and third.run_config["ops"]["expire_results"]["config"]["targets"] == ["d"]


def test_the_volume_cleanup_tick_deletes_nothing_and_its_job_releases_the_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from k8s_fakes import FakeClock, FakeKubernetesApi

    from c2d_defs.jobs.volume_cleanup import volume_cleanup_job
    from c2d_defs.k8s_manifests import K8sRunnerConfig
    from c2d_defs.k8s_pod_runner import K8sPodRunner
    from c2d_defs.k8s_resources import k8s_volume_cleanup

    monkeypatch.delenv("C2D_KEEP_WORK_DIRS", raising=False)
    fake = FakeKubernetesApi(clock=FakeClock())  # a fake Kubernetes API: no cluster runs here
    runner = K8sPodRunner(fake.client(), K8sRunnerConfig(namespace="jobs"))
    ended, going = "a" * 32, "b" * 32
    for job_id in (ended, going):
        runner.prepare_volume(job_id, 1024**3)
    with dg.DagsterInstance.ephemeral() as instance:
        finished = {engine.JOB_ID: ended, engine.DATE_FINISHED: f"{time.time() - 5000:.3f}"}
        instance.add_run(
            dg.DagsterRun(job_name=engine.JOB_NAME, status=dg.DagsterRunStatus.FAILURE, tags=finished)
        )
        instance.add_run(
            dg.DagsterRun(
                job_name=engine.JOB_NAME, status=dg.DagsterRunStatus.STARTED, tags={engine.JOB_ID: going}
            )
        )
        context = dg.build_sensor_context(instance=instance, resources={"pod_runner": runner})
        request = k8s_volume_cleanup(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_config == {"ops": {"release_volumes": {"config": {"targets": [ended]}}}}
        assert request.tags[MAINTENANCE] == "volume_cleanup" and not CONSUMER_TAGS & set(request.tags)
        assert set(fake.claims) == {f"c2d-{ended}", f"c2d-{going}"}  # the tick deleted nothing
        again = k8s_volume_cleanup(context)
        assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key

        result = run_requested_job(request, volume_cleanup_job, instance, {"pod_runner": runner})
        assert result.success
        assert set(fake.claims) == {f"c2d-{going}"}
        assert isinstance(k8s_volume_cleanup(context), dg.SkipReason)


def test_only_transient_errors_are_retried() -> None:
    import botocore.exceptions
    from kubernetes.client.rest import ApiException
    from sqlalchemy.exc import OperationalError

    throttled = botocore.exceptions.ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "DeleteObjects"
    )
    denied = botocore.exceptions.ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "DeleteObjects"
    )
    assert is_transient(throttled) and not is_transient(denied)
    assert is_transient(botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ApiException(status=503)) and is_transient(ApiException(status=429))
    assert not is_transient(ApiException(status=403)) and not is_transient(ApiException(status=404))
    assert is_transient(OperationalError("select", {}, Exception("server closed the connection")))
    assert is_transient(TimeoutError()) and is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("bad job id"))
    try:  # a transient cause under a wrapper counts
        try:
            raise ApiException(status=500)
        except ApiException as error:
            raise OSError("PVC: Kubernetes API answered 500") from error
    except OSError as wrapped:
        assert is_transient(wrapped)

    done: list[str] = []

    def act(item: str) -> bool:
        if item == "slow":
            raise TimeoutError("read timed out")
        if item == "bad":
            raise ValueError("bad job id")
        done.append(item)
        return True

    # Every item is tried; a transient failure is retried (the op's RetryPolicy), any other is not.
    with pytest.raises(TransientMaintenanceError):
        act_on_each(["a", "slow", "b"], act, str)
    assert done == ["a", "b"]
    with pytest.raises(dg.Failure) as failure:
        act_on_each(["bad", "c"], act, str)
    assert failure.value.allow_retries is False and done == ["a", "b", "c"]
    for job in (queue_expiry_job, results_expiry_job):
        [node] = job.graph.nodes
        assert node.definition.retry_policy == maintenance.RETRY_POLICY  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("deployment", "extra"), [("local", []), ("k8s", ["volume_cleanup_job"])], ids=["local", "k8s"]
)
def test_the_code_location_registers_the_jobs_its_sensors_ask_for(deployment: str, extra: list[str]) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "C2D_DEPLOYMENT": deployment, "KUBERNETES_SERVICE_HOST": ""}
    code = (
        "from c2d_defs.definitions import defs\n"
        "names = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith('__'))\n"
        "print(names)\n"
        "print(sorted((s.name, s.job_name) for s in defs.sensors))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    jobs, sensors = done.stdout.split("\n")[:2]
    assert jobs == str(
        sorted(
            [
                "compute_job",
                "queue_expiry_job",
                "results_expiry_job",
                "review_expiry_job",
                "review_job",
                "salvage_job",
                *extra,
            ]
        )
    )
    expected = [("queue_watchdog", "queue_expiry_job"), ("results_expiry", "results_expiry_job")]
    expected += [("review_expiry", "review_expiry_job"), ("stage_watchdog", "salvage_job")]
    if extra:
        expected.insert(0, ("k8s_volume_cleanup", "volume_cleanup_job"))
    assert sensors == str(expected)
