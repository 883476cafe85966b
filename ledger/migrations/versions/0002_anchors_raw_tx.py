"""Anchors keep their signed transaction, so a restarted anchorer rebroadcasts, never re-signs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_anchors_raw_tx"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add anchors.raw_tx: the exact signed bytes sent (EIP-2718 typed transaction)."""
    with op.batch_alter_table("anchors") as batch:
        batch.add_column(sa.Column("raw_tx", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    """Drop anchors.raw_tx."""
    with op.batch_alter_table("anchors") as batch:
        batch.drop_column("raw_tx")
