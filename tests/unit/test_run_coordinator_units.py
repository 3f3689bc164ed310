"""The run coordinator that launches at once (c2d_defs/run_coordinator.py): its decision, and its
submit on a real SQLite and a real Postgres instance (runs in real run storage, real launchers that
fail for real: the default launcher without a workspace, the warm launcher with no worker)."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from fixtures_postgres import fresh_database
from sqlalchemy import create_engine, text

from c2d_cli import stack
from c2d_core import engine
from c2d_core.environments import Environments
from c2d_defs import run_coordinator
from c2d_defs.run_coordinator import ADVISORY_KEY, LOCK_FILE, ImmediateRunCoordinator, decide

ROOT = Path(__file__).resolve().parents[2]
ENV, OTHER = "env-a", "env-b"
LIMITS = [
    {"key": engine.ENVIRONMENT, "value": ENV, "limit": 2},
    {"key": engine.ENVIRONMENT, "value": OTHER, "limit": 1},
]
S = dg.DagsterRunStatus


def make_run(
    status: S = S.NOT_STARTED, env: str | None = ENV, priority: int = 0, job: str = "compute_job"
) -> dg.DagsterRun:
    tags = {"dagster/priority": str(priority)}
    if env:
        tags[engine.ENVIRONMENT] = env
    # What the webserver's submit records: the job in the code location it came from.
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name=engine.LOCATION),
            repository_name=engine.REPOSITORY,
        ),
        job_name=job,
    )
    code = ReconstructableRepository.for_module("c2d_defs.definitions", "defs", working_directory=str(ROOT))
    return dg.DagsterRun(
        job_name=job,
        run_id=uuid.uuid4().hex,
        tags=tags,
        status=status,
        remote_job_origin=origin,
        job_code_origin=code.get_reconstructable_job(job).get_python_origin(),
    )


# --- the decision ---------------------------------------------------------------------------------


def test_a_run_under_its_limit_with_nothing_queued_launches() -> None:
    verdict = decide(make_run(), [make_run(S.STARTED)], [], LIMITS, 8)
    assert verdict.launch and "env-a has 1 in progress" in verdict.reason


def test_an_environment_at_its_limit_queues() -> None:
    assert not decide(make_run(), [make_run(S.STARTED), make_run(S.STARTING)], [], LIMITS, 8).launch


def test_a_queued_run_of_the_same_environment_ahead_blocks_even_with_room() -> None:
    verdict = decide(make_run(), [], [make_run(S.QUEUED)], LIMITS, 8)
    assert not verdict.launch and "queued ahead" in verdict.reason


def test_a_queued_run_of_another_environment_does_not_block_unless_of_higher_priority() -> None:
    other_full = [make_run(S.STARTED, OTHER)]
    assert decide(make_run(), other_full, [make_run(S.QUEUED, OTHER)], LIMITS, 8).launch
    verdict = decide(make_run(), other_full, [make_run(S.QUEUED, OTHER, priority=10)], LIMITS, 8)
    assert not verdict.launch and "higher priority" in verdict.reason


def test_a_run_without_environment_launches_under_the_global_maximum_past_a_full_environment() -> None:
    # env-a is full with a backlog the daemon cannot start: the maintenance run still goes at once.
    active = [make_run(S.STARTED), make_run(S.STARTED)]
    backlog = [make_run(S.QUEUED) for _ in range(5)]
    verdict = decide(make_run(env=None, priority=10, job="queue_expiry_job"), active, backlog, LIMITS, 3)
    assert verdict.launch and "max_concurrent_runs" in verdict.reason


def test_a_run_without_environment_queues_at_the_global_maximum() -> None:
    active = [make_run(S.STARTED), make_run(S.STARTED, OTHER), make_run(S.STARTED, None)]
    assert not decide(make_run(env=None, priority=10), active, [], LIMITS, 3).launch


def test_queued_runs_the_daemon_could_start_count_against_the_global_maximum() -> None:
    # One slot left, and the daemon may start the queued env-b run in it (env-b has room).
    active = [make_run(S.STARTED), make_run(S.STARTED, None)]
    verdict = decide(make_run(env=None), active, [make_run(S.QUEUED, OTHER)], LIMITS, 3)
    assert not verdict.launch and "maximum of 3" in verdict.reason
    assert decide(make_run(env=None), active, [make_run(S.QUEUED, OTHER)], LIMITS, -1).launch


# --- submit on a real instance --------------------------------------------------------------------


def instance_file(home: Path, storage: dict[str, Any] | None = None, **extra: Any) -> None:
    coordinator = {
        "max_concurrent_runs": 8,
        "tag_concurrency_limits": LIMITS,
        **extra.pop("coordinator", {}),
    }
    config: dict[str, Any] = {
        "telemetry": {"enabled": False},
        "run_coordinator": {
            "module": "c2d_defs.run_coordinator",
            "class": "ImmediateRunCoordinator",
            "config": coordinator,
        },
        **extra,
    }
    if storage:
        config["storage"] = storage
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


@contextlib.contextmanager
def instance_at(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_coordinator, ImmediateRunCoordinator)
        yield instance


def stored(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    instance.run_storage.add_run(run)
    return run


def submit(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    stored(instance, run)
    return instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]


def events(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.dagster_event.event_type_value
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None
    ]


def messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.message or "" for entry in instance.all_logs(run_id))


def test_an_environment_at_its_limit_enqueues(tmp_path: Path) -> None:
    instance_file(tmp_path)
    with instance_at(tmp_path) as instance:
        stored(instance, make_run(S.STARTED))
        stored(instance, make_run(S.STARTING))
        run = submit(instance, make_run())
        assert run.status == S.QUEUED
        assert events(instance, run.run_id) == ["PIPELINE_ENQUEUED"]


def test_a_queued_run_ahead_blocks_the_fast_path_first_in_first_out(tmp_path: Path) -> None:
    instance_file(tmp_path)
    with instance_at(tmp_path) as instance:
        stored(instance, make_run(S.STARTED))
        ahead = stored(instance, make_run(S.QUEUED))
        run = submit(instance, make_run())
        assert run.status == S.QUEUED and events(instance, run.run_id) == ["PIPELINE_ENQUEUED"]
        queue = instance.get_runs(dg.RunsFilter(statuses=[S.QUEUED]), ascending=True)
        assert [r.run_id for r in queue] == [ahead.run_id, run.run_id]


def test_a_launch_failure_fails_the_run_with_the_reason_as_the_dequeuer_does(tmp_path: Path) -> None:
    # The default launcher refuses a submit without a workspace: a real launch failure.
    instance_file(tmp_path)
    with instance_at(tmp_path) as instance:
        run = submit(instance, make_run())
        assert run.status == S.FAILURE
        kinds = events(instance, run.run_id)
        assert kinds[0] == "PIPELINE_STARTING" and "PIPELINE_ENQUEUED" not in kinds
        assert kinds[-1] == "PIPELINE_FAILURE"
        text_ = messages(instance, run.run_id)
        assert "Launched at once by the run coordinator: environment env-a has 0 in progress" in text_
        assert "unrecoverable error while launching the run at once" in text_
        assert "DefaultRunLauncher requires a workspace" in text_


def test_a_maintenance_run_launches_at_once_past_a_full_environment(tmp_path: Path) -> None:
    from c2d_defs.jobs import queue_expiry_job

    instance_file(tmp_path)
    with instance_at(tmp_path) as instance:
        for _ in range(2):
            stored(instance, make_run(S.STARTED))
        stored(instance, make_run(S.QUEUED))
        run = submit(instance, make_run(env=None, priority=10, job=queue_expiry_job.name))
        # It went to STARTING at once (and then failed: no workspace here), never into the queue.
        kinds = events(instance, run.run_id)
        assert kinds[0] == "PIPELINE_STARTING" and "PIPELINE_ENQUEUED" not in kinds
        assert "under max_concurrent_runs (2 in progress)" in messages(instance, run.run_id)


def test_a_launch_that_cannot_reach_the_warm_worker_goes_back_to_the_queue(tmp_path: Path) -> None:
    instance_file(
        tmp_path,
        coordinator={"max_user_code_failure_retries": 3, "user_code_failure_retry_delay": 1},
        run_launcher={
            "module": "c2d_defs.warm_launcher",
            "class": "WarmRunLauncher",
            "config": {"socket_path": str(tmp_path / "none.sock"), "connect_wait_seconds": 0.1},
        },
    )
    with instance_at(tmp_path) as instance:
        run = submit(instance, make_run())
        assert run.status == S.QUEUED
        assert events(instance, run.run_id)[0] == "PIPELINE_STARTING"
        assert events(instance, run.run_id)[-1] == "PIPELINE_ENQUEUED"
        assert "failed to reach the user code server, putting the run into the queue" in messages(
            instance, run.run_id
        )


def test_launch_at_once_false_is_dagsters_queue(tmp_path: Path) -> None:
    instance_file(tmp_path, coordinator={"launch_at_once": False})
    with instance_at(tmp_path) as instance:
        assert not instance.run_coordinator.launch_at_once  # type: ignore[attr-defined]
        run = submit(instance, make_run())
        assert run.status == S.QUEUED and events(instance, run.run_id) == ["PIPELINE_ENQUEUED"]


def test_a_held_file_lock_makes_the_submit_enqueue(tmp_path: Path) -> None:
    instance_file(tmp_path, coordinator={"lock_wait_seconds": 0.3})
    with instance_at(tmp_path) as instance, open(tmp_path / LOCK_FILE, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = submit(instance, make_run())
        assert run.status == S.QUEUED and events(instance, run.run_id) == ["PIPELINE_ENQUEUED"]


def test_a_held_advisory_lock_makes_the_submit_enqueue_on_postgres(tmp_path: Path) -> None:
    with fresh_database("c2d_rc_unit") as name:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
        instance_file(tmp_path, {"postgres": {"postgres_url": url}}, coordinator={"lock_wait_seconds": 0.3})
        holder = create_engine(url)
        try:
            with instance_at(tmp_path) as instance:
                with holder.connect() as conn:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_KEY})
                    blocked = submit(instance, make_run())
                    assert blocked.status == S.QUEUED
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                # Free again: the next one is decided (launched, and fails for want of a workspace).
                free = submit(instance, make_run(env=OTHER))
                assert events(instance, free.run_id)[0] == "PIPELINE_STARTING"
                instance.run_coordinator.dispose()
        finally:
            holder.dispose()


def test_an_enqueue_waits_until_the_last_starting_has_settled(tmp_path: Path) -> None:
    instance_file(tmp_path, coordinator={"settle_seconds": 0.4})
    with instance_at(tmp_path) as instance:
        stored(instance, make_run(S.STARTED))
        first = submit(instance, make_run())  # launched (then failed: no workspace)
        second = submit(instance, make_run(S.NOT_STARTED, OTHER))
        stored(instance, make_run(S.STARTED, OTHER))
        third = submit(instance, make_run(S.NOT_STARTED, OTHER))
        assert third.status == S.QUEUED
        starting = [
            e.timestamp
            for e in instance.all_logs(second.run_id)
            if e.dagster_event_type == dg.DagsterEventType.RUN_STARTING
        ]
        enqueued = [
            e.timestamp
            for e in instance.all_logs(third.run_id)
            if e.dagster_event_type == dg.DagsterEventType.RUN_ENQUEUED
        ]
        assert events(instance, first.run_id)[0] == "PIPELINE_STARTING"
        assert enqueued[0] >= starting[0] + 0.4


def test_concurrent_submits_in_threads_launch_no_more_than_the_limit(tmp_path: Path) -> None:
    # The warm launcher with no worker puts each launched run back: which runs reached STARTING is
    # the coordinator's choice alone; with the environment empty, exactly its limit do, per round.
    instance_file(
        tmp_path,
        coordinator={"max_user_code_failure_retries": 3, "settle_seconds": 0.2},
        run_launcher={
            "module": "c2d_defs.warm_launcher",
            "class": "WarmRunLauncher",
            "config": {"socket_path": str(tmp_path / "none.sock"), "connect_wait_seconds": 5},
        },
    )
    with instance_at(tmp_path) as instance:
        runs = [stored(instance, make_run()) for _ in range(12)]
        gate = threading.Barrier(len(runs))

        def go(run: dg.DagsterRun) -> None:
            gate.wait()
            instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]

        threads = [threading.Thread(target=go, args=(run,)) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        launched = [run for run in runs if "PIPELINE_STARTING" in events(instance, run.run_id)]
        assert len(launched) == 2
        assert all(instance.get_run_by_id(run.run_id).status == S.QUEUED for run in runs)  # type: ignore[union-attr]


# --- the instance files ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["dagster.yaml", "deploy/dagster-postgres.yaml"])
def test_the_shipped_instance_files_use_the_coordinator(path: str) -> None:
    config = yaml.safe_load((ROOT / path).read_text())["run_coordinator"]
    assert (config["module"], config["class"]) == ("c2d_defs.run_coordinator", "ImmediateRunCoordinator")
    assert run_coordinator.ImmediateRunCoordinator.config_type()  # the file's keys are its config


def test_dev_up_renders_the_coordinator_with_one_limit_per_environment(tmp_path: Path) -> None:
    environments = Environments.load(ROOT / "config" / "environments.yaml")
    stack.render_instance(tmp_path, environments)
    with instance_at(tmp_path) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits  # type: ignore[union-attr]
        assert {item["value"]: item["limit"] for item in limits} == {
            env.id: env.max_jobs for env in environments.all()
        }
        assert instance.run_coordinator.launch_at_once  # type: ignore[attr-defined]


def test_the_helm_values_configure_the_coordinator_with_valid_config(tmp_path: Path) -> None:
    values = yaml.safe_load((ROOT / "helm" / "c2d" / "values.yaml").read_text())
    custom = values["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["customRunCoordinator"]
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump({"telemetry": {"enabled": False}, "run_coordinator": custom})
    )
    with instance_at(tmp_path) as instance:
        config = instance.get_concurrency_config().run_queue_config
        assert config is not None and config.max_concurrent_runs == 20
        assert instance.run_coordinator.dequeue_interval_seconds == 2  # type: ignore[attr-defined]
