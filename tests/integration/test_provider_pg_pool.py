"""The Provider reads Postgres run storage through pooled connections, and a dead one is replaced.

The instance file is the production one (deploy/dagster-postgres.yaml) on a fresh database of the
machine's Postgres. Backends are counted in pg_stat_activity for that database only, so other users of
the server do not matter. A restart is simulated by ending the Provider's own sessions with
pg_terminate_backend, which is what a server restart does to its clients. The server itself is not
restarted: tests/faults/test_postgres_restart.py does that on a private server.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterRun, DagsterRunStatus
from fixtures_postgres import database_url, fresh_database, point_dagster_at
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from c2d_core import engine
from provider_api.dagster_jobs import (
    STATEMENT_TIMEOUT_MS,
    DagsterJobs,
    _storage_engines,
    release_storage,
    storage_instance,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

INSTANCE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "dagster-postgres.yaml"
OWNER = "0x" + "ab" * 20
READS = 20


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database("c2d_pg_pool") as name:
        point_dagster_at(monkeypatch, name)
        yield name


@pytest.fixture
def admin() -> Iterator[Engine]:
    server = create_engine(database_url("test"), isolation_level="AUTOCOMMIT")
    yield server
    server.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "dagster"
    folder.mkdir()
    shutil.copy(INSTANCE_FILE, folder / "dagster.yaml")
    return folder


def _backends(admin: Engine, database: str) -> set[int]:
    with admin.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :db"), {"db": database})
        return {int(pid) for pid in rows.scalars()}


def _wait_backends(admin: Engine, database: str, want: int) -> set[int]:
    """The database's backends once there are `want` of them. A backend that was terminated or closed
    leaves pg_stat_activity shortly after, not at once."""
    deadline = time.monotonic() + 20
    while True:
        seen = _backends(admin, database)
        if len(seen) == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def _started_run(home: Path) -> str:
    """A running compute job written into run storage (as the engine would). Returns its job id."""
    job_id = uuid.uuid4().hex
    writer = storage_instance(home)
    try:
        tags = {engine.JOB_ID: job_id, engine.OWNER: OWNER, engine.STATUS: "40"}
        writer.add_run(
            DagsterRun(
                job_name=engine.JOB_NAME, run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED, tags=tags
            )
        )
    finally:
        release_storage(writer)
    return job_id


def test_status_reads_reuse_one_pooled_connection(home: Path, database: str, admin: Engine) -> None:
    job_id = _started_run(home)
    assert _wait_backends(admin, database, 0) == set(), "the writer's connections are closed"
    with DagsterJobs("http://127.0.0.1:9/graphql", dagster_home=home, active_seconds=0) as jobs:
        seen: list[set[int]] = []
        for _ in range(READS):
            record = jobs.job(job_id, fresh=True)
            assert record is not None and record.run_status == "STARTED"
            seen.append(_backends(admin, database))
        # One backend for the run storage, the same after every read. Without a pool each read opens
        # its own connection and closes it after the read.
        assert len(seen[0]) == 1, seen[0]
        assert all(backends == seen[0] for backends in seen), seen
        engines = _storage_engines(jobs._dagster())
        pooled = [sql_engine for sql_engine in engines if sql_engine.pool.checkedin()]
        assert len(pooled) == 1
        with pooled[0].connect() as conn:
            # Dagster's connect hook sets the statement timeout on every pooled connection.
            assert conn.execute(text("SHOW statement_timeout")).scalar() == f"{STATEMENT_TIMEOUT_MS // 1000}s"
    # Closing the Provider's jobs closes its pooled connections (Dagster's dispose alone does not).
    assert _wait_backends(admin, database, 0) == set()


def test_a_terminated_pooled_connection_does_not_fail_the_next_read(
    home: Path, database: str, admin: Engine
) -> None:
    job_id = _started_run(home)
    with DagsterJobs("http://127.0.0.1:9/graphql", dagster_home=home, active_seconds=0) as jobs:
        record = jobs.job(job_id, fresh=True)
        assert record is not None
        # The run and the event log storages now both hold a connection.
        assert jobs._read_cancel_time(record.run_id) is None
        before = _wait_backends(admin, database, 2)
        assert len(before) == 2, before
        with admin.connect() as conn:
            for pid in before:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert _wait_backends(admin, database, 0) == set(), "the Provider's sessions were ended"

        again = jobs.job(job_id, fresh=True)
        assert again is not None and again.run_id == record.run_id
        # A write through both storages (the consumer's stop record) gets through as well.
        jobs._record_stop(again, OWNER)
        stopped = jobs.job(job_id, fresh=True)
        assert stopped is not None and stopped.tags[engine.STOPPED_BY] == OWNER
        after = _backends(admin, database)
        assert after and not after & before, "new connections replaced the dead ones"


def test_sqlite_storage_has_no_pool_and_reads_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "dagster"
    folder.mkdir()
    (folder / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {tmp_path / 'storage'}\n")
    instance = storage_instance(folder)
    try:
        assert _storage_engines(instance) == []
        assert instance.get_run_records(limit=1) == []
    finally:
        release_storage(instance)
