"""PostgreSQL restarted mid-job under a stack whose Dagster instance is on Postgres
(deploy/dagster-postgres.yaml, a fresh database per test): the job ends with a clear status.

The server is a private one (faultkit.private_postgres): restarting the machine's shared server
would cut every other user of it. `pg_ctl restart -m fast` / `stop -m fast` end every session, as
a crash-restart or failover of the database does for its clients.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultkit import (
    EXAMPLES,
    PrivatePostgres,
    demo_job,
    finished_job,
    job_json,
    private_postgres,
    wait_for,
)
from fixtures_postgres import point_dagster_at

from c2d_cli import stack
from c2d_cli.origin import LocalOrigin
from c2d_core.settings import EngineSettings
from c2d_core.status import JobStatus
from provider_api.dagster_jobs import DagsterJobs

# A hang guard, not a speed check: each test's time includes its own stack's start and stop and, for
# the last, the private server's removal (about 30 s, 40 s and 17 s at a load of 15 on 2 cores).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

# Longer than dagster-postgres' own connection retries (5 retries, about 11 s of backoff in all).
OUTAGE = 12
INSTANCE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "dagster-postgres.yaml"


@dataclass
class PgStack:
    running: stack.Stack
    home: Path
    postgres: PrivatePostgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def pg_stack(
    postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PgStack]:
    database = f"c2d_dagster_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database)
    point_dagster_at(monkeypatch, database, postgres.port)
    # Should a run fail on a write, the stage watchdog ends its job within seconds, not minutes.
    monkeypatch.setenv("C2D_WATCHDOG_INTERVAL", "1")
    monkeypatch.setenv("C2D_WATCHDOG_GRACE", "5")
    monkeypatch.setenv("C2D_RUN_MONITORING_INTERVAL", "2")
    home = tmp_path_factory.mktemp("pg_restart") / ".c2d"
    running, _ = stack.up(home, port=stack._free_port(), instance_template=INSTANCE_FILE)
    try:
        yield PgStack(running, home, postgres)
    finally:
        stack.down(home)


def test_postgres_restarted_while_the_algorithm_runs_the_job_finishes(pg_stack: PgStack) -> None:
    s = pg_stack
    key_file = EngineSettings(home=s.home).resolved_provider_key_file
    code = "import time; time.sleep(5); open('/data/outputs/out.txt', 'w').write('pg-restart')"
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(f"{s.running.webserver_url}/graphql", dagster_home=s.running.dagster_home) as operator,
    ):
        workflow = demo_job(origin.url, key_file, code)
        operator.submit(workflow)
        wait_for(
            lambda: (job_json(s.running.provider_url, workflow) or {}).get("status") == 40, 40, "status 40"
        )
        s.postgres.restart()  # every connection of the webserver, daemon and run worker is cut
        job = finished_job(s.running.provider_url, workflow, 60)
    assert job["status"] == 70 and job["runStatus"] == "SUCCESS", job
    assert "out.txt" in [entry["filename"] for entry in job["results"]]


def test_postgres_down_across_a_status_write_the_job_still_ends_clearly(pg_stack: PgStack) -> None:
    """An outage longer than dagster-postgres' own retries, across the end of the algorithm stage:
    the run worker's log and tag writes wait in those retries (a log line may be lost); either the
    job gets through (70), or it ends with a failure status and a detail. It never stays running."""
    s = pg_stack
    key_file = EngineSettings(home=s.home).resolved_provider_key_file
    code = "import time; time.sleep(2); open('/data/outputs/out.txt', 'w').write('pg-outage')"
    work_dir = EngineSettings(home=s.home).resolved_work_dir
    with (
        LocalOrigin(EXAMPLES) as origin,
        DagsterJobs(f"{s.running.webserver_url}/graphql", dagster_home=s.running.dagster_home) as operator,
    ):
        workflow = demo_job(origin.url, key_file, code)
        operator.submit(workflow)
        wait_for(
            lambda: (job_json(s.running.provider_url, workflow) or {}).get("status") == 40, 40, "status 40"
        )
        s.postgres.stop()
        try:
            # The algorithm ends while the database is down: the op's next steps write to it.
            out = work_dir / workflow.job_id / "data" / "outputs" / "out.txt"
            wait_for(out.exists, 20, "the algorithm's output")
            # The Provider cannot answer once its cache's bound for an unfinished job (1 s,
            # PROVIDER_STATUS_CACHE_SECONDS) has passed: a status read from run storage fails.
            wait_for(lambda: job_json(s.running.provider_url, workflow) is None, 15, "no answer")
            time.sleep(OUTAGE)
        finally:
            s.postgres.start()
        job = finished_job(s.running.provider_url, workflow, 60)
    if job["status"] == 70:
        assert job["runStatus"] == "SUCCESS" and "out.txt" in [r["filename"] for r in job["results"]], job
    else:
        assert JobStatus(job["status"]).is_failure and job["runStatus"] in ("FAILURE", "CANCELED"), job
        assert job["statusDetail"], job
