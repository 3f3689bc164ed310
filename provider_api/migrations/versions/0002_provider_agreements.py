"""Agreement claims: at most one unfinished compute job per agreement (order), across replicas.

Revision ID: 0002_provider_agreements
Revises: 0001_provider_nonces
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_provider_agreements"
down_revision = "0001_provider_nonces"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_agreements",
        sa.Column("agreement_id", sa.String(200), primary_key=True),
        sa.Column("job_id", sa.String(200), nullable=False),
        # Epoch seconds of the claim: a claim whose job never reached Dagster goes stale after a while.
        sa.Column("created", sa.Float, nullable=False),
        schema=op.get_context().opts.get("version_table_schema"),
    )


def downgrade() -> None:
    op.drop_table("provider_agreements", schema=op.get_context().opts.get("version_table_schema"))
