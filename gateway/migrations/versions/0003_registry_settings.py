"""Declared settings on the registry: a community's time zone, a device's sensor profile."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0003"
down_revision = "g0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add communities.time_zone (UTC for those registered before) and devices.profile."""
    with op.batch_alter_table("communities") as table:
        table.add_column(
            sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC")
        )
    with op.batch_alter_table("devices") as table:
        table.add_column(sa.Column("profile", sa.Text))


def downgrade() -> None:
    """Drop them (in place: rebuilding a table that others reference breaks their keys)."""
    op.execute("ALTER TABLE devices DROP COLUMN profile")  # SQLite 3.35 and later
    op.execute("ALTER TABLE communities DROP COLUMN time_zone")
