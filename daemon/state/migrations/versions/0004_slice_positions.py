"""Each instance's slice position (mm along the normal of its image plane), so that a
series' completion can be decided from its stack of slices (evenly spaced and gap-free)
instead of a long quiet period.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("slice_position", sa.Float()))


def downgrade() -> None:
    raise NotImplementedError("the node database is never downgraded; restore a backup instead")
