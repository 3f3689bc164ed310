"""The production Dagster instance file (deploy/dagster-postgres.yaml) on the real Postgres.

A fresh database is created for the test and dropped after it; DAGSTER_HOME holds that file exactly as
shipped, credentials come from the DAGSTER_PG_* variables. The real `compute_job` runs in process
against it, and its c2d tags are read back straight from Postgres run storage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from engine_kit import (
    dataset_input,
    make_c2d_home,
    python_algorithm,
    raw_workflow,
    run_compute_job,
    serve_origin,
)
from fixtures_postgres import database_url, fresh_database, point_dagster_at
from sqlalchemy import create_engine, text

from c2d_core import engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_FILE = ROOT / "deploy" / "dagster-postgres.yaml"
ENVIRONMENTS = """
environments:
  - id: pg-env
    ramGB: 0.5
    diskGB: 0.05
    maxJobDuration: 20
    maxJobs: 1
    maxProcesses: 64
    imageMap:
      - image: "python:3.11*"
        aliases: {python: /usr/bin/python3}
"""
ALGORITHM = "import os; open('/data/outputs/out.txt', 'w').write('pg'); print('ran on postgres')"


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database("c2d_dagster") as name:
        point_dagster_at(monkeypatch, name)
        yield name


@pytest.fixture
def c2d_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_c2d_home(tmp_path, monkeypatch, ENVIRONMENTS, configure_deadline=None)


def test_instance_file_is_postgres_with_queue_and_run_monitoring() -> None:
    config = yaml.safe_load(INSTANCE_FILE.read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    # Credentials only by environment variable: nothing secret is in the file.
    for key in ("username", "password", "hostname", "db_name", "port"):
        assert set(db[key]) == {"env"} and db[key]["env"].startswith("DAGSTER_PG_")
    assert config["run_coordinator"]["class"] == "ImmediateRunCoordinator"
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] and monitoring["start_timeout_seconds"] > 0
    assert monitoring["max_runtime_seconds"] > 0


def test_compute_job_runs_on_the_postgres_instance_and_tags_land_in_run_storage(
    database: str, c2d_home: Path, tmp_path: Path
) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(INSTANCE_FILE, dagster_home / "dagster.yaml")
    with (
        serve_origin(tmp_path / "origin", {"in.txt": "1\n"}) as origin,
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
    ):
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "ImmediateRunCoordinator"
        assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
        did = "did:op:" + hashlib.sha256(b"pg").hexdigest()
        job_id = uuid.uuid4().hex
        workflow = raw_workflow(
            job_id=job_id,
            environment="pg-env",
            agreementId="0x" + "ab" * 32,
            inputs=[dataset_input(c2d_home, did, [f"{origin.url}/in.txt"])],
            algorithm=python_algorithm(ALGORITHM),
        )
        result = run_compute_job(
            workflow, instance, tags={engine.JOB_ID: job_id, engine.ENVIRONMENT: "pg-env"}
        )
        assert result.success
        run_id = result.run_id

    # Straight from Postgres: the run, its c2d tags and its events are in run storage.
    db = create_engine(database_url(database))
    try:
        with db.connect() as conn:
            status = conn.execute(text("SELECT status FROM runs WHERE run_id = :r"), {"r": run_id}).scalar()
            tags = dict(
                conn.execute(
                    # The job's tags: the visible c2d/* and the state under Dagster's hidden prefix.
                    text(
                        "SELECT key, value FROM run_tags WHERE run_id = :r"
                        " AND (key LIKE 'c2d/%' OR key LIKE '.dagster/c2d/%')"
                    ),
                    {"r": run_id},
                ).all()
            )
            events = conn.execute(
                text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": run_id}
            ).scalar()
    finally:
        db.dispose()
    assert status == "SUCCESS"
    assert tags[engine.JOB_ID] == job_id and tags[engine.ENVIRONMENT] == "pg-env"
    assert tags[engine.STATUS] == "70" and tags[engine.STATUS_TEXT] == "Job finished"
    assert tags[engine.ALGORITHM_EXIT_CODE] == "0"
    assert float(tags[engine.DATE_FINISHED]) > 0
    assert "out.txt" in [entry["filename"] for entry in json.loads(tags[engine.RESULTS])]
    assert events and events > 10
