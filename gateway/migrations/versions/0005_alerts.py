"""Alerts: rules, community alert settings, silences, rule state, events, the delivery outbox
and how far the evaluator has read the log."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0005"
down_revision = "g0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the alert tables (nothing evaluated yet: the evaluator starts at the log's end)."""
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("alert_rules_community", "alert_rules", ["community_id"])
    op.create_table(
        "alert_settings",
        sa.Column("community_id", sa.String(64), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.Integer),
        sa.Column("subject", sa.String(200)),
        sa.Column("starts_at", sa.BigInteger, nullable=False),
        sa.Column("ends_at", sa.BigInteger, nullable=False),
        sa.Column("comment", sa.String(500), nullable=False),
    )
    op.create_index("alert_silences_community", "alert_silences", ["community_id"])
    op.create_table(
        "alert_states",
        sa.Column("rule_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("community_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", sa.BigInteger),
        sa.Column("last_notified", sa.BigInteger),
        sa.Column("acked_by", sa.String(200)),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("alert_states_community", "alert_states", ["community_id"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.Integer, nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("detected_at", sa.BigInteger, nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("notified", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("alert_events_community", "alert_events", ["community_id", "id"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("recipient", sa.String(500), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.String(32)),
        sa.Column("log_tag_id", sa.String(70)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("alert_deliveries_due", "alert_deliveries", ["status", "next_attempt"])
    op.create_index("alert_deliveries_community", "alert_deliveries", ["community_id", "id"])
    progress = op.create_table(
        "alert_progress",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("through_idx", sa.BigInteger),
    )
    op.bulk_insert(progress, [{"id": 1, "through_idx": None}])


def downgrade() -> None:
    """Drop them."""
    for table in (
        "alert_progress",
        "alert_deliveries",
        "alert_events",
        "alert_states",
        "alert_silences",
        "alert_settings",
        "alert_rules",
    ):
        op.drop_table(table)
