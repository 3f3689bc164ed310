"""Status reads from run storage (provider_api.dagster_jobs) and the cache in front of them
(provider_api.status_cache), over a real Dagster instance (SQLite in a temporary DAGSTER_HOME).

No webserver: the reads never go through one. What is checked: a job read from storage is the job
(first run of its id, re-executions left out); finished jobs are served from memory until their
results are due to expire, unfinished ones for the active bound only; concurrent misses for one job
are one storage read; a storage error reaches every waiter and is not cached.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun

from c2d_core import engine
from c2d_core.run_stamp import PARENT_RUN_ID
from provider_api.dagster_jobs import BackendUnavailable, DagsterJobs
from provider_api.status_cache import ReadCache

OWNER = "0x" + "ab" * 20
ENV = "ocean-compute"
CLOSED = "http://127.0.0.1:9/graphql"  # writes are never made here


@pytest.fixture
def home(tmp_path: Path) -> Path:
    environments = tmp_path / "environments.yaml"
    environments.write_text(
        yaml.safe_dump(
            {"environments": [{"id": ENV, "storageExpiry": 3600}, {"id": "keep", "storageExpiry": 0}]}
        )
    )
    folder = tmp_path / "dagster"
    folder.mkdir()
    (folder / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return folder


@pytest.fixture
def instance(home: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as made:
        yield made


def jobs_of(home: Path, active: float = 60.0) -> DagsterJobs:
    return DagsterJobs(
        CLOSED, dagster_home=home, environments_file=home.parent / "environments.yaml", active_seconds=active
    )


def add_run(
    instance: DagsterInstance,
    job_id: str,
    status: DagsterRunStatus = DagsterRunStatus.STARTED,
    env: str = ENV,
    **tags: str,
) -> str:
    run_id = str(uuid.uuid4())
    all_tags = {
        engine.JOB_ID: job_id,
        engine.OWNER: OWNER,
        engine.ENVIRONMENT: env,
        engine.STATUS: "40",
        **tags,
    }
    instance.add_run(DagsterRun(job_name=engine.JOB_NAME, run_id=run_id, status=status, tags=all_tags))
    return run_id


def finish(instance: DagsterInstance, run_id: str, finished_at: float) -> None:
    """Publish's last tags, then the run's success event (which sets its status and end time)."""
    from dagster._core.events import DagsterEvent, DagsterEventType

    instance.add_run_tags(run_id, {engine.STATUS: "70", engine.DATE_FINISHED: f"{finished_at:.3f}"})
    event = DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=engine.JOB_NAME)
    instance.report_dagster_event(event, run_id)


def test_reads_come_from_run_storage_without_a_webserver(instance: DagsterInstance, home: Path) -> None:
    job_id = uuid.uuid4().hex
    first = add_run(instance, job_id)
    with jobs_of(home) as jobs:
        assert jobs.current_jobs(ENV) == (1, 0)
    # A re-execution carries its parent's tags; it is not the job and is never listed.
    add_run(instance, job_id, **{PARENT_RUN_ID: first})
    with jobs_of(home) as jobs:
        record = jobs.job(job_id)
        assert record is not None and record.run_id == first and record.run_status == "STARTED"
        assert [r.run_id for r in jobs.jobs(owner=OWNER)] == [first]
        assert jobs.jobs(job_id=job_id) == [record]
        assert jobs.job(uuid.uuid4().hex) is None


def test_unfinished_jobs_are_read_again_after_the_active_bound(instance: DagsterInstance, home: Path) -> None:
    job_id = uuid.uuid4().hex
    run_id = add_run(instance, job_id)
    with jobs_of(home, active=60) as cached, jobs_of(home, active=0) as uncached:
        assert (cached.job(job_id) or pytest.fail()).tags[engine.STATUS] == "40"
        assert (uncached.job(job_id) or pytest.fail()).tags[engine.STATUS] == "40"
        instance.add_run_tags(run_id, {engine.STATUS: "50"})
        # Within its bound the cached process answers what it read; a 0 s bound reads again.
        assert (cached.job(job_id) or pytest.fail()).tags[engine.STATUS] == "40"
        assert (uncached.job(job_id) or pytest.fail()).tags[engine.STATUS] == "50"
        assert (cached.job(job_id, fresh=True) or pytest.fail()).tags[engine.STATUS] == "50"


def test_finished_jobs_are_kept_until_their_results_are_due_to_expire(
    instance: DagsterInstance, home: Path
) -> None:
    recent, old, kept = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    runs = {
        recent: add_run(instance, recent),
        old: add_run(instance, old),
        kept: add_run(instance, kept, env="keep"),
    }
    now = time.time()
    finish(instance, runs[recent], now - 10)
    finish(instance, runs[old], now - 7200)  # past ENV's storageExpiry of an hour
    finish(instance, runs[kept], now - 10**6)  # storageExpiry 0: kept for good
    with jobs_of(home, active=0) as jobs:
        for job_id in runs:
            record = jobs.job(job_id)
            assert record is not None and record.finished and record.run_ended
        assert jobs._lifetime(jobs.job(recent)) == pytest.approx(3600 - 10, abs=5)
        assert jobs._lifetime(jobs.job(kept)) == float("inf")
        loads = jobs.cache.loads
        for _ in range(5):
            jobs.job(recent)
            jobs.job(kept)
        assert jobs.cache.loads == loads  # served from memory
        # Due to expire: read again (with the active bound) until the expiry tag is seen, then kept.
        jobs.job(old)
        assert jobs.cache.loads == loads + 1
        instance.add_run_tags(runs[old], {engine.RESULTS_EXPIRED: "1"})
        expired = jobs.job(old)
        assert expired is not None and expired.tags[engine.RESULTS_EXPIRED] == "1"
        assert jobs._lifetime(expired) == float("inf")


def test_concurrent_misses_for_one_job_are_one_storage_read(instance: DagsterInstance, home: Path) -> None:
    job_id = uuid.uuid4().hex
    add_run(instance, job_id)
    reads: list[str] = []
    gate = threading.Event()
    with jobs_of(home) as jobs:
        read_runs = jobs._read_runs

        def slow_read(tags: dict[str, str], limit: int = 100) -> Any:
            reads.append(tags[engine.JOB_ID])
            gate.wait(10)  # every other caller arrives while this read is in flight
            return read_runs(tags, limit)

        jobs._read_runs = slow_read  # type: ignore[method-assign]
        answers: list[Any] = []
        threads = [threading.Thread(target=lambda: answers.append(jobs.job(job_id))) for _ in range(20)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while jobs.cache.joined < 19 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for thread in threads:
            thread.join()
        assert reads == [job_id]
        assert len(answers) == 20 and len({id(answer) for answer in answers}) == 1
        assert answers[0] is not None and answers[0].job_id == job_id


def test_a_failed_read_reaches_every_waiter_and_is_not_kept() -> None:
    cache: ReadCache[int] = ReadCache(10)
    calls = 0
    gate = threading.Event()

    def failing() -> int:
        nonlocal calls
        calls += 1
        gate.wait(10)
        raise BackendUnavailable("storage down")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            cache.get("k", failing, lambda _: 60)
        except BackendUnavailable as error:
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    while cache.joined < 4:
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join()
    assert calls == 1 and len(errors) == 5
    assert cache.get("k", lambda: 7, lambda _: 60) == 7  # the error was not stored


def test_the_cache_is_bounded_and_ages_entries() -> None:
    now = [0.0]
    cache: ReadCache[int] = ReadCache(3, clock=lambda: now[0])
    for key in "abcd":
        cache.get(key, lambda key=key: ord(key), lambda _: 10)
    assert len(cache) == 3
    assert cache.get("a", lambda: -1, lambda _: 10) == -1  # the oldest went first
    now[0] = 11
    assert cache.get("d", lambda: -2, lambda _: 10) == -2  # aged out
    assert cache.get("e", lambda: 5, lambda _: 0) == 5 and cache.get("e", lambda: 6, lambda _: 0) == 6


def test_a_storage_that_does_not_answer_is_backend_unavailable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    postgres = {"username": "postgres", "password": "", "hostname": "127.0.0.1", "port": port, "db_name": "x"}
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": {"postgres": {"postgres_db": postgres}}})
    )
    with (
        DagsterJobs(CLOSED, dagster_home=tmp_path) as jobs,
        pytest.raises(BackendUnavailable, match="run storage"),
    ):
        jobs.job(uuid.uuid4().hex)


def test_without_bounds_the_cache_takes_the_settings_defaults(home: Path) -> None:
    from provider_api.settings import ProviderSettings

    fields = ProviderSettings.model_fields
    with DagsterJobs(CLOSED, dagster_home=home) as jobs:
        assert jobs.active_seconds == fields["status_cache_seconds"].default
        assert jobs.cache.max_entries == fields["status_cache_entries"].default
    with DagsterJobs(CLOSED, dagster_home=home, active_seconds=0, cache_entries=5) as jobs:
        assert jobs.active_seconds == 0 and jobs.cache.max_entries == 5
