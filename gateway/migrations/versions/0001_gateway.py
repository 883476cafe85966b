"""Gateway tables: communities, devices, apps, admin tokens, reading index."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the gateway's tables."""
    op.create_table(
        "communities",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("community_id", sa.String(64), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("public_key", sa.String(44), nullable=False),
        sa.Column("revoked_at", sa.String(32)),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("devices_community", "devices", ["community_id"])
    op.create_table(
        "device_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("public_key", sa.String(44), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("device_keys_device", "device_keys", ["device_id"])
    op.create_table(
        "apps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "readings",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("community_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("start", sa.String(32), nullable=False),
    )
    op.create_index("readings_community_start", "readings", ["community_id", "start"])
    op.create_index("readings_device_start", "readings", ["device_id", "start"])


def downgrade() -> None:
    """Drop the gateway's tables."""
    for table in ("readings", "admin_tokens", "apps", "device_keys", "devices", "communities"):
        op.drop_table(table)
