"""Leases, so that several nodes can share one database: a job or delivery a node works on
carries its owner and the time its claim runs out; another node takes it over after that.
Singleton tasks (the retention purge) hold a named lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("jobs", "outbox"):
        op.add_column(table, sa.Column("lease_owner", sa.Text()))
        op.add_column(table, sa.Column("lease_until", sa.Float()))
    op.create_table(
        "leases",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the node database is never downgraded; restore a backup instead")
