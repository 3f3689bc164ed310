"""The machine's PostgreSQL (127.0.0.1:5432, trust, user postgres): a fresh database per test.

`fresh_database` creates a uniquely named database and drops it afterwards (with every session still
on it); `point_dagster_at` sets the `DAGSTER_PG_*` variables the production instance file reads. Tests
that need Postgres fail, never skip, when the server is not there: this machine kind runs it before
every session and in CI.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def database_url(name: str) -> str:
    return f"{SERVER}/{name}"


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database named `<prefix>_<random>`; yields its name and drops it at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(database_url("test"), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.fail(f"Postgres is not reachable at 127.0.0.1:5432 (user postgres, db test): {error}")
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def point_dagster_at(monkeypatch: pytest.MonkeyPatch, database: str, port: int = 5432) -> None:
    """Point the production instance file (deploy/dagster-postgres.yaml: `DAGSTER_PG_*`) at `database`
    on the local server (or another one on `port`)."""
    for key, value in {
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)
