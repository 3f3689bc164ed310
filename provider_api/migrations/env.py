"""Alembic's entry point, run by provider_api.migrations.upgrade on the connection it passes in."""

from __future__ import annotations

from alembic import context

from provider_api.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the Provider's migrations through provider_api.migrations.upgrade()")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=VERSION_TABLE,
    version_table_schema=context.config.attributes.get("schema"),
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
