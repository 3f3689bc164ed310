"""The Provider's own database schema (nonces, agreement claims), managed by alembic.

`upgrade(engine, schema)` brings the database to the newest revision: a fresh database gets every
table, one that is behind gets the missing revisions, one at head is left alone. It runs in one
transaction; on Postgres a transaction-scoped advisory lock makes Provider replicas that start
together migrate one after the other (the second finds the first's work and does nothing), and on
SQLite the store's BEGIN IMMEDIATE does the same. Alembic's bookkeeping lives in its own table,
`provider_alembic_version`, so the Provider can share a database with Dagster (which keeps its own
`alembic_version`). To add a revision: a new file in `versions/` with `down_revision` set to the
current head (`alembic -c` is not needed; `upgrade` finds the scripts by path).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "provider_alembic_version"
# Key of the Postgres advisory lock that serialises migrations across replicas ("c2dprov" in hex).
ADVISORY_LOCK_KEY = 0x63326470726F76


def _config(connection: Connection, schema: str | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def head() -> str:
    """The newest revision the code knows."""
    script = ScriptDirectory(str(HERE))
    revision = script.get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine, schema: str | None = None) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
        )
        return context.get_current_revision()


def upgrade(engine: Engine, schema: str | None = None) -> None:
    """Bring the database (and `schema`, created if missing, on Postgres) to head; a no-op at head."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            if schema is not None:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        command.upgrade(_config(conn, schema), "head")
