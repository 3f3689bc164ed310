"""Deadlines of a whole job and of each stage, per-environment queue waits, and the stage watchdog's
verdicts, on real Dagster runs in a real (ephemeral) instance."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from pydantic import ValidationError

from c2d_core import engine
from c2d_core.environments import Environment, Environments
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from c2d_core.workflow import Workflow
from c2d_defs.jobs import salvage_job
from c2d_defs.queue_watchdog import expire_queued_runs, queue_wait_limits
from c2d_defs.stage_watchdog import (
    WORKER_DIED,
    EndCause,
    StagePosition,
    Verdict,
    current_stage,
    find_stuck_jobs,
    judge,
    record_verdict,
    run_end_cause,
    salvage_request,
    stage_watchdog,
)

ENV = Environment.model_validate({"id": "e1", "maxJobDuration": 100})
SETTINGS = EngineSettings(configure_deadline=30, publish_deadline=20, watchdog_grace=5)
NOW = 1_800_000_000.0


def _workflow(environment: str = "e1") -> Workflow:
    return Workflow.model_validate(
        {
            "jobId": uuid.uuid4().hex,
            "owner": "0x" + "1" * 40,
            "environment": environment,
            "inputs": [
                {"did": "did:op:" + "a" * 64, "serviceId": "compute", "files": {"encryptedFiles": "0x00"}}
            ],
            "algorithm": {
                "rawcode": "print(1)",
                "container": {"entrypoint": "python $ALGO", "image": "python"},
            },
        }
    )


def test_every_run_gets_a_max_runtime_of_all_stage_deadlines_plus_the_grace() -> None:
    assert ENV.max_runtime(SETTINGS) == 30 + 100 + 20 + 5
    tags = engine.submission_tags(_workflow(), ENV.max_runtime(SETTINGS))
    assert tags[engine.MAX_RUNTIME] == "155" and engine.MAX_RUNTIME == "dagster/max_runtime"
    assert engine.MAX_RUNTIME not in engine.submission_tags(_workflow())


def test_queue_wait_per_environment_overrides_the_engine_wide_limit() -> None:
    envs = Environments(
        [
            Environment.model_validate({"id": "strict", "maxQueueWait": 3}),
            Environment.model_validate({"id": "patient", "maxQueueWait": 0}),
            Environment.model_validate({"id": "default"}),
        ]
    )
    limit_of = queue_wait_limits(envs, 60)
    assert [limit_of(name) for name in ("strict", "patient", "default", "unknown")] == [3, 0, 60, 60]
    with pytest.raises(ValidationError, match="maxQueueWait"):
        Environment.model_validate({"id": "bad", "maxQueueWait": -1})


def _phases(**edges: float) -> dict[str, str]:
    """`configure_started=…` style keywords as phase tags."""
    tags = {}
    for key, value in edges.items():
        phase, edge = key.rsplit("_", 1)
        tags[engine.phase_tag(phase, edge)] = str(value)
    return tags


def test_current_stage_comes_from_the_phase_tags() -> None:
    assert current_stage({}) is None
    assert current_stage(_phases(configure_started=1)) == StagePosition("configure", 1)
    # Between two stages the job counts as in the next one, from the previous one's end.
    assert current_stage(_phases(configure_started=1, configure_finished=2)) == StagePosition("algorithm", 2)
    assert current_stage(
        _phases(configure_started=1, configure_finished=2, algorithm_started=3)
    ) == StagePosition("algorithm", 3)
    done = _phases(configure_started=1, configure_finished=2, algorithm_started=3, algorithm_finished=4)
    assert current_stage(done) == StagePosition("publish", 4)
    assert current_stage({**done, **_phases(publish_started=5)}) == StagePosition("publish", 5)


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


def _run(status: dg.DagsterRunStatus, **tags: str) -> dg.DagsterRun:
    base = {engine.JOB_ID: uuid.uuid4().hex, engine.ENVIRONMENT: "e1"}
    return dg.DagsterRun(
        job_name=engine.JOB_NAME,
        run_id=str(uuid.uuid4()),
        status=status,
        tags={**base, **tags},
        remote_job_origin=ORIGIN,
    )


def _judge(run: dg.DagsterRun, now: float = NOW, cause: EndCause = WORKER_DIED) -> Verdict | None:
    return judge(run, environments=Environments([ENV]), settings=SETTINGS, now=now, cause=cause)


@pytest.mark.parametrize(
    ("phases", "status"),
    [
        ({}, JobStatus.DATA_PROVISIONING_FAILED),
        (_phases(configure_started=NOW - 1), JobStatus.DATA_PROVISIONING_FAILED),
        (_phases(configure_started=1, configure_finished=2, algorithm_started=3), JobStatus.ALGORITHM_FAILED),
        (_phases(configure_started=1, configure_finished=2), JobStatus.ALGORITHM_FAILED),
        (
            _phases(configure_started=1, configure_finished=2, algorithm_started=3, algorithm_finished=4),
            JobStatus.RESULTS_UPLOAD_FAILED,
        ),
    ],
)
def test_a_run_that_died_ends_its_job_with_the_stage_s_failure_code(
    phases: dict[str, str], status: JobStatus
) -> None:
    verdict = _judge(_run(dg.DagsterRunStatus.FAILURE, **phases))
    assert verdict is not None and verdict.status is status and not verdict.terminate
    assert "run worker died" in verdict.detail and "FAILURE" in verdict.detail


def test_finished_jobs_queued_stops_and_healthy_stages_are_left_alone() -> None:
    finished = _run(dg.DagsterRunStatus.FAILURE, **{engine.DATE_FINISHED: "1"})
    stopped_in_queue = _run(dg.DagsterRunStatus.CANCELED)
    queued = _run(dg.DagsterRunStatus.QUEUED)
    in_time = _run(dg.DagsterRunStatus.STARTED, **_phases(configure_started=NOW - 30 - 5))
    algorithm_in_time = _run(
        dg.DagsterRunStatus.STARTED,
        **_phases(configure_started=1, configure_finished=2, algorithm_started=NOW - 104),
    )
    for run in (finished, stopped_in_queue, queued, in_time, algorithm_in_time):
        assert _judge(run) is None, run.status


@pytest.mark.parametrize(
    ("phases", "deadline", "status"),
    [
        (_phases(configure_started=NOW - 36), 30, JobStatus.DATA_PROVISIONING_FAILED),
        (_phases(configure_started=1, configure_finished=NOW - 106), 100, JobStatus.ALGORITHM_FAILED),
        (
            _phases(
                configure_started=1, configure_finished=2, algorithm_started=3, algorithm_finished=NOW - 26
            ),
            20,
            JobStatus.RESULTS_UPLOAD_FAILED,
        ),
    ],
)
def test_a_stage_past_its_deadline_plus_grace_is_ended_and_its_run_terminated(
    phases: dict[str, str], deadline: int, status: JobStatus
) -> None:
    run = _run(dg.DagsterRunStatus.STARTED, **phases)
    verdict = _judge(run)
    assert verdict is not None and verdict.terminate and verdict.status is status
    assert f"deadline of {deadline} s plus a grace of 5 s" in verdict.detail
    # Judged once: a later tick that still finds the run going (its terminate did not take) only
    # terminates it again, without tagging anew; a terminated run is CANCELING and left to Dagster.
    again = _judge(_run(dg.DagsterRunStatus.STARTED, **phases, **{engine.WATCHDOG: verdict.detail}))
    assert again is not None and again.recorded and again.terminate and not again.salvage
    assert _judge(_run(dg.DagsterRunStatus.CANCELING, **phases, **{engine.WATCHDOG: verdict.detail})) is None


def test_a_stopped_job_whose_run_ended_before_publishing_is_salvaged_too() -> None:
    run = _run(dg.DagsterRunStatus.CANCELED, **_phases(configure_started=1), **{engine.STOP_REQUESTED: "1"})
    # Its worker ended the run itself (RUN_CANCELED, no cancel timeout): nothing of it runs on.
    verdict = _judge(run, cause=EndCause("the job's run ended", worker_gone=True))
    assert verdict is not None and "stopped but its run ended before publishing" in verdict.detail
    assert verdict.salvage


# Publish started 10 s ago: well inside its deadline (20 s) plus the grace (5 s).
PUBLISHING = _phases(
    configure_started=1,
    configure_finished=2,
    algorithm_started=3,
    algorithm_finished=4,
    publish_started=NOW - 10,
)
TERMINATED = EndCause("the job ran past its dagster/max_runtime and its run was ended", worker_gone=False)


def test_a_terminated_run_whose_worker_may_still_publish_is_not_salvaged_under_it() -> None:
    run = _run(dg.DagsterRunStatus.FAILURE, **PUBLISHING)
    # Terminated (max_runtime, a stop's cancel timeout): the worker's interrupt handler may still be
    # running the publish pod, so the job gets its verdict but no salvage run yet.
    waiting = _judge(run, cause=TERMINATED)
    assert waiting is not None and not waiting.salvage and not waiting.terminate
    assert waiting.status is JobStatus.RESULTS_UPLOAD_FAILED and "max_runtime" in waiting.detail
    # Past the publish deadline plus the grace, the handler is gone too: salvage.
    late = _judge(run, now=NOW + 16, cause=TERMINATED)
    assert late is not None and late.salvage
    # A worker that died publishes nothing more: salvage at once.
    died = _judge(run, cause=WORKER_DIED)
    assert died is not None and died.salvage and "run worker died" in died.detail


def _ended_run(instance: dg.DagsterInstance, *, events: list[str], max_runtime: bool = False) -> str:
    run = _run(dg.DagsterRunStatus.STARTED, **PUBLISHING)
    instance.add_run(run)
    for message in events:
        instance.report_engine_event(message, run)
    if max_runtime:  # what run monitoring writes at a run's max_runtime
        instance.report_run_canceling(run, message="Canceling due to exceeding maximum runtime of 9 seconds.")
        instance.report_run_failed(run, "Exceeded maximum runtime of 9 seconds.")
    else:
        instance.report_run_failed(run)
    return run.run_id


def test_the_end_cause_says_whether_the_run_worker_is_gone() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        # The local code server's words for a worker process that died (kill -9, OOM).
        killed = _ended_run(
            instance, events=["Run execution process for x was terminated by signal 9 (SIGKILL)."]
        )
        assert run_end_cause(instance, killed) is WORKER_DIED
        timed_out = run_end_cause(instance, _ended_run(instance, events=[], max_runtime=True))
        assert not timed_out.worker_gone and "max_runtime" in timed_out.sentence
        # Nothing says the worker is gone: it may still be running its interrupt handler.
        assert not run_end_cause(instance, _ended_run(instance, events=[])).worker_gone


def test_a_job_that_finished_after_it_was_judged_keeps_its_own_status() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        run = _run(dg.DagsterRunStatus.FAILURE, **PUBLISHING)
        instance.add_run(run)
        verdict = _judge(run)
        assert verdict is not None
        # The worker's publish wrote the final status between the judging and the recording.
        instance.add_run_tags(run.run_id, {engine.STATUS: "70", engine.DATE_FINISHED: str(NOW)})
        assert record_verdict(instance, verdict) is False
        tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
        assert tags[engine.STATUS] == "70" and engine.WATCHDOG not in tags


def test_a_tick_ends_every_stuck_job_even_when_terminating_one_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from c2d_defs.resources import ComputeEnvironments

    environments_file = tmp_path / "environments.yaml"
    environments_file.write_text("environments:\n  - id: e1\n    maxJobDuration: 100\n")
    monkeypatch.setenv("C2D_CONFIGURE_DEADLINE", "30")
    monkeypatch.setenv("C2D_WATCHDOG_GRACE", "5")
    with dg.DagsterInstance.ephemeral() as instance:
        stuck = [
            _run(dg.DagsterRunStatus.STARTED, **_phases(configure_started=time.time() - 100)) for _ in "ab"
        ]
        for run in stuck:
            instance.add_run(run)

        def refuse(run_id: str) -> bool:
            raise RuntimeError(f"cannot reach the run worker of {run_id}")

        monkeypatch.setattr(instance.run_coordinator, "cancel_run", refuse)
        context = dg.build_sensor_context(
            instance=instance,
            resources={"environments": ComputeEnvironments(environments_file=str(environments_file))},
        )
        list(stage_watchdog(context))
        for run in stuck:  # both judged and tagged, although each terminate failed
            tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
            assert tags[engine.STATUS] == "31" and engine.WATCHDOG in tags
        terminated: list[str] = []
        monkeypatch.setattr(instance.run_coordinator, "cancel_run", terminated.append)
        assert list(stage_watchdog(context)) == []  # the next tick terminates them, and asks no salvage
        assert sorted(terminated) == sorted(run.run_id for run in stuck)


def test_on_an_instance_dead_runs_are_tagged_once_and_salvaged_once() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        dead = _run(dg.DagsterRunStatus.FAILURE, **_phases(configure_started=time.time() - 1))
        done = _run(dg.DagsterRunStatus.FAILURE, **{engine.DATE_FINISHED: "1"})
        for run in (dead, done):
            instance.add_run(run)
        now = time.time()
        [verdict] = find_stuck_jobs(instance, Environments([ENV]), SETTINGS, now)
        assert verdict.run_id == dead.run_id and not verdict.recorded
        record_verdict(instance, verdict)
        tags = instance.get_run_by_id(dead.run_id).tags  # type: ignore[union-attr]
        assert tags[engine.STATUS] == "31" and tags[engine.STATUS_TEXT] == "Data provisioning failed"
        assert tags[engine.WATCHDOG] == verdict.detail == tags[engine.STATUS_DETAIL]
        assert engine.DATE_FINISHED not in tags  # written by the salvage run, with the results
        [again] = find_stuck_jobs(instance, Environments([ENV]), SETTINGS, now)
        assert again.recorded
        # One salvage run per compute run, whichever tick asks: Dagster launches a run key once.
        assert salvage_request(again).run_key == salvage_request(verdict).run_key == f"salvage:{dead.run_id}"


def test_queued_runs_expire_at_their_own_environment_s_limit() -> None:
    envs = Environments(
        [
            Environment.model_validate({"id": "strict", "maxQueueWait": 3}),
            Environment.model_validate({"id": "patient", "maxQueueWait": 0}),
            Environment.model_validate({"id": "default"}),
        ]
    )
    with dg.DagsterInstance.ephemeral() as instance:
        runs = {}
        for env_id in ("strict", "patient", "default"):
            run = _run(dg.DagsterRunStatus.QUEUED, **{engine.ENVIRONMENT: env_id})
            instance.add_run(run)
            runs[env_id] = run.run_id
        limit_of = queue_wait_limits(envs, 600)
        assert expire_queued_runs(instance, limit_of, time.time()) == []
        assert expire_queued_runs(instance, limit_of, time.time() + 10) == [runs["strict"]]
        ended = instance.get_run_by_id(runs["strict"])
        assert ended is not None and ended.status == dg.DagsterRunStatus.CANCELED
        assert ended.tags[engine.STATUS] == "2" and "more than 3 s" in ended.tags[engine.STATUS_DETAIL]
        assert "strict" in ended.tags[engine.STATUS_DETAIL]
        assert expire_queued_runs(instance, limit_of, time.time() + 700) == [runs["default"]]
        patient = instance.get_run_by_id(runs["patient"])
        assert patient is not None and patient.status == dg.DagsterRunStatus.QUEUED


def test_on_kubernetes_the_watchdog_deletes_the_job_s_jobs_and_sees_its_volume() -> None:
    from k8s_fakes import FakeClock, FakeKubernetesApi

    from c2d_defs.k8s_manifests import K8sRunnerConfig, job_manifest
    from c2d_defs.k8s_pod_runner import K8sPodRunner
    from c2d_defs.stage_pods import algorithm_spec

    fake = FakeKubernetesApi(clock=FakeClock())
    runner = K8sPodRunner(fake.client(), K8sRunnerConfig(namespace="jobs"), suffix=lambda: "abcde")
    workflow = _workflow()
    assert not runner.has_volume(workflow.job_id) and runner.kill_pods(workflow.job_id) == 0
    runner.prepare_volume(workflow.job_id, ENV.disk_bytes)
    assert runner.has_volume(workflow.job_id)
    # A Job left running by a run worker that died.
    spec = algorithm_spec(workflow, ENV)
    fake.create_namespaced_job("jobs", job_manifest(spec, "c2d-left-behind", runner.config, []))
    assert runner.kill_pods(workflow.job_id) == 1
    assert [call["name"] for call in fake.called("delete_namespaced_job")] == ["c2d-left-behind"]
    assert runner.has_volume(workflow.job_id)  # kept for the watchdog's publish
    runner.release_volume(workflow.job_id)
    assert not runner.has_volume(workflow.job_id)


def test_a_run_that_failed_in_the_engine_says_so_not_that_its_worker_died() -> None:
    @dg.op
    def configure() -> None:
        raise ValueError(
            "the configure op broke reaching http://10.0.0.5:9000/c2d-results from /srv/c2d/jobs"
        )

    @dg.job(name=engine.JOB_NAME)
    def broken_compute_job() -> None:
        configure()

    with dg.DagsterInstance.ephemeral() as instance:
        tags = {engine.JOB_ID: uuid.uuid4().hex, **_phases(configure_started=time.time())}
        result = broken_compute_job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        assert not result.success
        [verdict] = find_stuck_jobs(instance, Environments([ENV]), SETTINGS, time.time())
        assert verdict.run_id == result.run_id and verdict.status is JobStatus.DATA_PROVISIONING_FAILED
        # The error's type only: its text (an endpoint, a host path) reaches consumers as statusDetail.
        assert verdict.detail == "the engine failed (ValueError) during its configure stage (run FAILURE)"
        assert verdict.salvage  # the worker ended the run itself


def test_the_k8s_cleanup_leaves_a_volume_the_watchdog_has_yet_to_publish() -> None:
    from types import SimpleNamespace

    from c2d_defs.k8s_resources import orphaned_volumes

    now = 10_000.0
    awaiting = SimpleNamespace(is_finished=True, tags={engine.WATCHDOG: "the job's run worker died"})
    salvaged = SimpleNamespace(
        is_finished=True, tags={engine.WATCHDOG: "died", engine.DATE_FINISHED: str(now - 5000)}
    )
    runs = {"a" * 32: [awaiting], "b" * 32: [salvaged]}
    volumes = [("a" * 32, 0.0), ("b" * 32, 0.0)]
    assert orphaned_volumes(volumes, lambda job_id: runs[job_id], now, 900) == ["b" * 32]


def test_an_op_tells_a_stop_from_the_runtime_limit_and_the_watchdog() -> None:
    from types import SimpleNamespace

    from dagster._core.events import DagsterEvent, DagsterEventType

    from c2d_defs.ops.compute import _engine_end

    with dg.DagsterInstance.ephemeral() as instance:

        def started_run(**tags: str) -> SimpleNamespace:
            run = _run(dg.DagsterRunStatus.NOT_STARTED, **tags)
            instance.add_run(run)
            start = DagsterEvent(DagsterEventType.RUN_START.value, job_name=engine.JOB_NAME)
            instance.report_dagster_event(start, run_id=run.run_id)
            return SimpleNamespace(instance=instance, run_id=run.run_id)

        # The consumer's stop: nothing else explains the terminate.
        assert _engine_end(started_run(**{engine.MAX_RUNTIME: "3600"})) is None  # type: ignore[arg-type]
        # Run monitoring at the run's max_runtime (0 s here: already past it): not a stop.
        limit = _engine_end(started_run(**{engine.MAX_RUNTIME: "0"}))  # type: ignore[arg-type]
        assert limit is not None and "max_runtime" in limit and "stop" not in limit
        verdict = "the job's algorithm stage made no progress"
        assert _engine_end(started_run(**{engine.WATCHDOG: verdict})) == verdict  # type: ignore[arg-type]


class _Runner:
    """A pod runner whose publish pod either reports `report` or is interrupted (a stop)."""

    def __init__(self, report: str | None) -> None:
        self.report = report
        self.released: list[str] = []

    def run(self, spec: object) -> object:
        from dagster._core.errors import DagsterExecutionInterruptedError

        from c2d_defs.pod_runner import PodResult

        if self.report is None:
            raise DagsterExecutionInterruptedError("stopped")
        return PodResult(termination="Error", termination_message=self.report, started_at=0, finished_at=1)

    def release_volume(self, job_id: str) -> None:
        self.released.append(job_id)


@pytest.mark.parametrize("store_failed", [True, False])
def test_the_volume_is_kept_only_when_the_result_store_failed(store_failed: bool) -> None:
    from types import SimpleNamespace

    from dagster._core.errors import DagsterExecutionInterruptedError

    from c2d_defs.ops.compute import publish_job
    from c2d_defs.ops.recorder import JobRecorder, JobState

    report = '{"status": 62, "message": "S3 upload failed (ConnectionClosedError)"}'
    runner = _Runner(report if store_failed else None)
    store = SimpleNamespace(
        publish_mounts=lambda job_id: [],
        publish_env=lambda: {},
        publish_secrets=lambda: {},
        publish_network=False,
    )
    with dg.DagsterInstance.ephemeral() as instance:
        run = _run(dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        recorder = JobRecorder(instance, run.run_id, SimpleNamespace(info=print, warning=print))  # type: ignore[arg-type]
        state = JobState(job_id=run.tags[engine.JOB_ID], status=JobStatus.RUNNING_ALGORITHM, environment=ENV)
        if store_failed:
            publish_job(recorder, state, runner, store)  # type: ignore[arg-type]
        else:  # a stop during publish: the pod is killed, nothing of the store failed
            with pytest.raises(DagsterExecutionInterruptedError):
                publish_job(recorder, state, runner, store)  # type: ignore[arg-type]
        tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
        assert tags[engine.STATUS] == "62" and engine.DATE_FINISHED in tags
        assert (tags.get(engine.VOLUME_KEPT) == "1") is store_failed
        assert runner.released == ([] if store_failed else [state.job_id])


STORED = {
    **_phases(
        configure_started=1,
        configure_finished=2,
        algorithm_started=3,
        algorithm_finished=4,
        publish_started=5,
        publish_finished=6,
    ),
    engine.RESULTS: '[{"filename":"out.txt","filesize":2,"type":"output","index":0}]',
}


@pytest.mark.parametrize(("before", "after"), [("60", JobStatus.JOB_FINISHED), ("31", JobStatus(31))])
def test_a_worker_that_died_after_storing_the_results_keeps_the_job_s_outcome(
    before: str, after: JobStatus
) -> None:
    # Dead in the results-asset step: the results are in the store and listed; 60 was about to be 70.
    verdict = _judge(_run(dg.DagsterRunStatus.FAILURE, **STORED, **{engine.STATUS: before}))
    assert verdict is not None and verdict.status is after and verdict.salvage


def test_the_salvage_of_a_job_whose_results_were_stored_does_not_publish_again(tmp_path: Path) -> None:
    from c2d_defs.resources import ComputeEnvironments, LocalPodRunnerResource, LocalResultStoreResource

    envs = tmp_path / "environments.yaml"
    envs.write_text("environments:\n  - id: e1\n    maxJobDuration: 100\n")
    with dg.DagsterInstance.ephemeral() as instance:
        run = _run(dg.DagsterRunStatus.FAILURE, **STORED, **{engine.STATUS: "60"})
        instance.add_run(run)
        [verdict] = find_stuck_jobs(instance, Environments([ENV]), SETTINGS, time.time())
        assert record_verdict(instance, verdict)
        result = salvage_job.execute_in_process(
            run_config={"ops": {"salvage": {"config": {"run_id": run.run_id}}}},
            instance=instance,
            resources={
                "pod_runner": LocalPodRunnerResource(work_dir=str(tmp_path / "jobs")),
                "result_store": LocalResultStoreResource(results_dir=str(tmp_path / "results")),
                "environments": ComputeEnvironments(environments_file=str(envs)),
            },
        )
        assert result.success
        tags = instance.get_run_by_id(run.run_id).tags  # type: ignore[union-attr]
    assert tags[engine.STATUS] == "70" and engine.DATE_FINISHED in tags
    assert tags[engine.RESULTS] == STORED[engine.RESULTS]  # not replaced by an empty list
    assert "its results had been stored" in tags[engine.STATUS_DETAIL]
