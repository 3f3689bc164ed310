"""One unfinished job per agreement across Provider replicas (provider_api.agreements), and the
Provider's alembic migrations that create its tables, on SQLite and on the real Postgres
(127.0.0.1:5432, user postgres, db test, trust auth; each test gets its own schema, dropped after).

The last test races "replicas" (each with its own DagsterJobs, so no in-process lock helps) on a real
embedded stack: exactly one run is launched for the agreement.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from provider_api import migrations
from provider_api.agreements import AgreementBusy, AgreementClaims, Holder, run_holder
from provider_api.nonces import NonceStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def pg_schema() -> Iterator[tuple[Engine, str]]:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as error:
        engine.dispose()
        pytest.fail(f"Postgres is not reachable at 127.0.0.1:5432 (user postgres, db test): {error}")
    schema = f"test_claims_{uuid.uuid4().hex[:12]}"
    try:
        yield engine, schema
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def pg_claims(pg_schema: tuple[Engine, str]) -> Iterator[AgreementClaims]:
    _, schema = pg_schema
    store = NonceStore(POSTGRES_URL, schema=schema)
    try:
        yield AgreementClaims(store.engine, schema=schema, stale_after=60)
    finally:
        store.dispose()


# -- migrations --------------------------------------------------------------------------------------


def _tables(engine: Engine, schema: str | None) -> set[str]:
    return set(inspect(engine).get_table_names(schema=schema))


def test_migrations_on_sqlite_fresh_to_head_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'provider.db'}"
    store = NonceStore(url)
    try:
        assert migrations.current(store.engine) == migrations.head() == "0002_provider_agreements"
        assert {"provider_nonces", "provider_agreements", "provider_alembic_version"} <= _tables(
            store.engine, None
        )
        store.advance("0x" + "11" * 20, 5)
        migrations.upgrade(store.engine)  # at head: nothing happens, nothing is lost
        assert migrations.current(store.engine) == migrations.head()
    finally:
        store.dispose()
    again = NonceStore(url)  # a Provider restart
    try:
        assert again.current("0x" + "11" * 20) == 5
    finally:
        again.dispose()


def test_migrations_adopt_a_nonce_table_made_before_them(tmp_path: Path) -> None:
    # Before migrations, NonceStore made its table with create_all; such a database upgrades in place.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE provider_nonces (address VARCHAR(42) PRIMARY KEY, nonce VARCHAR(78))")
        )
        conn.execute(
            text("INSERT INTO provider_nonces VALUES ('0x" + "22" * 20 + "', '" + "7".zfill(78) + "')")
        )
    engine.dispose()
    store = NonceStore(url)
    try:
        assert migrations.current(store.engine) == migrations.head()
        assert store.current("0x" + "22" * 20) == 7
    finally:
        store.dispose()


def test_migrations_on_postgres_fresh_schema_to_head_and_rerun(pg_schema: tuple[Engine, str]) -> None:
    engine, schema = pg_schema
    assert migrations.current(engine, schema) is None
    # Two replicas starting together: the advisory lock makes one migrate, the other find it done.
    errors: list[BaseException] = []

    def start() -> None:
        try:
            NonceStore(POSTGRES_URL, schema=schema).dispose()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert migrations.current(engine, schema) == migrations.head()
    assert {"provider_nonces", "provider_agreements", "provider_alembic_version"} <= _tables(engine, schema)
    # Nothing of ours lands in the public schema (Dagster may share the database).
    assert "provider_alembic_version" not in _tables(engine, "public") or schema == "public"
    migrations.upgrade(engine, schema)
    assert migrations.current(engine, schema) == migrations.head()


# -- the claim layer -----------------------------------------------------------------------------------


def _race(n: int, attempt: Callable[[int], object]) -> tuple[list[object], list[BaseException]]:
    barrier = threading.Barrier(n)
    won: list[object] = []
    lost: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            result = attempt(i)
        except BaseException as error:
            with lock:
                lost.append(error)
            return
        with lock:
            won.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return won, lost


def test_concurrent_claims_of_one_agreement_on_postgres_exactly_one_wins(pg_claims: AgreementClaims) -> None:
    order = "0x" + uuid.uuid4().hex * 2
    won, lost = _race(12, lambda i: pg_claims.claim(order, f"job-{i}", lambda _: Holder.RUNNING))
    assert len(won) == 1 and len(lost) == 11
    assert all(isinstance(error, AgreementBusy) for error in lost), lost
    holder = pg_claims.get(order)
    assert holder is not None and holder.job_id == won[0].job_id  # type: ignore[attr-defined]
    assert all(error.job_id == holder.job_id for error in lost)  # type: ignore[attr-defined]
    assert "already has an unfinished compute job" in str(lost[0])
    # A retried start of the holding job passes; another job is refused while the holder runs.
    assert pg_claims.claim(order, holder.job_id, lambda _: Holder.RUNNING).job_id == holder.job_id
    with pytest.raises(AgreementBusy):
        pg_claims.claim(order, "job-new", lambda _: Holder.RUNNING)
    # A claim whose job has no run yet is young: still busy (its launch may be in flight).
    with pytest.raises(AgreementBusy):
        pg_claims.claim(order, "job-new", lambda _: Holder.MISSING)


def test_finished_or_abandoned_claims_are_taken_over_once(pg_claims: AgreementClaims) -> None:
    order = "0x" + uuid.uuid4().hex * 2
    pg_claims.claim(order, "first", lambda _: Holder.RUNNING)

    # The first job finished: of many concurrent new starts exactly one takes the agreement over;
    # the others then meet a claim whose job runs.
    def holder(job_id: str) -> Holder:
        return Holder.FINISHED if job_id == "first" else Holder.RUNNING

    won, lost = _race(8, lambda i: pg_claims.claim(order, f"second-{i}", holder))
    assert len(won) == 1, (won, lost)
    assert all(isinstance(error, AgreementBusy) for error in lost), lost
    claim = pg_claims.get(order)
    assert claim is not None and claim.job_id == won[0].job_id  # type: ignore[attr-defined]

    # A Provider died between claim and launch: no run ever came. After stale_after it is free.
    dead = "0x" + uuid.uuid4().hex * 2
    pg_claims.claim(dead, "never-launched", lambda _: Holder.RUNNING)
    with pytest.raises(AgreementBusy):
        pg_claims.claim(dead, "retry", lambda _: Holder.MISSING)
    with pg_claims.engine.begin() as conn:
        conn.execute(
            pg_claims.table.update()
            .where(pg_claims.table.c.agreement_id == dead)
            .values(created=time.time() - 61)
        )
    assert pg_claims.claim(dead, "retry", lambda _: Holder.MISSING).job_id == "retry"
    # A failed launch releases its own claim only.
    pg_claims.release(dead, "someone-else")
    assert pg_claims.get(dead) is not None
    pg_claims.release(dead, "retry")
    assert pg_claims.get(dead) is None


# -- replicas against a real stack -------------------------------------------------------------------


def test_replicas_racing_one_agreement_launch_exactly_one_run(
    pg_claims: AgreementClaims, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from c2d_cli import stack
    from c2d_cli.demo import demo_workflow
    from c2d_cli.origin import LocalOrigin
    from c2d_core.settings import EngineSettings
    from c2d_core.workflow import Workflow
    from provider_api.dagster_jobs import DagsterJobs, JobConflict

    home = tmp_path_factory.mktemp("claims") / ".c2d"
    running, _ = stack.up(home, port=stack._free_port())
    try:
        key_file = EngineSettings(home=Path(running.home)).resolved_provider_key_file
        graphql = f"{running.webserver_url}/graphql"
        with LocalOrigin(EXAMPLES) as origin:
            base = demo_workflow(origin.url, key_file).model_dump(
                by_alias=True, mode="json", exclude_none=True
            )
            order = "0x" + uuid.uuid4().hex * 2
            replicas = [DagsterJobs(graphql, dagster_home=running.dagster_home) for _ in range(6)]
            try:

                def start(i: int) -> str:
                    # What compute_start does on each replica: claim, then submit.
                    workflow = Workflow.model_validate(
                        {**base, "jobId": uuid.uuid4().hex, "agreementId": order}
                    )
                    pg_claims.claim(order, workflow.job_id, run_holder(replicas[i]))
                    return replicas[i].submit(workflow).run_id

                won, lost = _race(len(replicas), start)
                assert len(won) == 1, (won, lost)
                assert all(isinstance(error, AgreementBusy | JobConflict) for error in lost), lost
                runs = replicas[0].jobs(agreement_id=order)
                assert [run.run_id for run in runs] == won
                # When that job is finished, the agreement takes a new job again.
                deadline = time.monotonic() + 60
                while not (replicas[0].job(runs[0].job_id) or runs[0]).finished:
                    assert time.monotonic() < deadline
                    time.sleep(0.3)
                assert start(0) not in won
                assert len(replicas[0].jobs(agreement_id=order)) == 2
            finally:
                for replica in replicas:
                    replica.close()
    finally:
        stack.down(home)
