"""The nonce store: one row per address, the nonce as 78-digit zero-padded text (see nonces.py).

Revision ID: 0001_provider_nonces
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_provider_nonces"
down_revision = None
branch_labels = None
depends_on = None

WIDTH = 78


def upgrade() -> None:
    schema = op.get_context().opts.get("version_table_schema")
    # Bytewise collation on Postgres: a locale collation could order digit strings otherwise.
    nonce_type = sa.String(WIDTH).with_variant(sa.String(WIDTH, collation="C"), "postgresql")
    # A database whose nonce table predates migrations (created by create_all) keeps it as it is:
    # the table is identical, so this revision only records that it is there.
    if sa.inspect(op.get_bind()).has_table("provider_nonces", schema=schema):
        return
    op.create_table(
        "provider_nonces",
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("nonce", nonce_type, nullable=False),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("provider_nonces", schema=op.get_context().opts.get("version_table_schema"))
