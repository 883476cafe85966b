"""Device changes: what each gateway process polls to keep its device cache current."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0002"
down_revision = "g0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create device_changes."""
    op.create_table(
        "device_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    """Drop device_changes."""
    op.drop_table("device_changes")
