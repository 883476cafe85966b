"""The alert tables (migration g0005). Times are Unix seconds; a rule's spec and a state's
data are JSON."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text

metadata = MetaData()

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("spec", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Migration g0006: the log's size when the rule was created or replaced; it evaluates
    # the entries from that index on (None: a rule older than the column, from anywhere).
    Column("from_idx", BigInteger),
)

# Per community: channels, repeat interval, quiet hours.
alert_settings = Table(
    "alert_settings",
    metadata,
    Column("community_id", String(64), primary_key=True),
    Column("spec", Text, nullable=False),
)

alert_silences = Table(
    "alert_silences",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(64), nullable=False),
    Column("rule_id", Integer),  # None: every rule
    Column("subject", String(200)),  # None: every subject
    Column("starts_at", BigInteger, nullable=False),
    Column("ends_at", BigInteger, nullable=False),
    Column("comment", String(500), nullable=False),
)

# One row per (rule, subject) the evaluator has seen: where its state machine stands.
alert_states = Table(
    "alert_states",
    metadata,
    Column("rule_id", Integer, primary_key=True, autoincrement=False),
    Column("subject", String(200), primary_key=True),
    Column("community_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("since", BigInteger),  # the minute the current state began
    Column("last_notified", BigInteger),  # wall clock, for the repeat interval
    Column("acked_by", String(200)),
    Column("data", Text, nullable=False),
)

# Every state change, and what became of its notification (sent, silenced, suppressed...).
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(64), nullable=False),
    Column("rule_id", Integer, nullable=False),
    Column("subject", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("minute", BigInteger, nullable=False),
    Column("detected_at", BigInteger, nullable=False),
    Column("late", Boolean, nullable=False),
    Column("notified", String(16), nullable=False),
    Column("detail", Text, nullable=False),
)

# The outbox: one row per message to one recipient on one channel, retried until sent.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("target", Text, nullable=False),  # JSON: the channel as configured
    Column("recipient", String(500), nullable=False),
    Column("body", Text, nullable=False),  # JSON: the grouped alerts
    Column("status", String(16), nullable=False),  # pending, sent, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", BigInteger, nullable=False),
    Column("last_error", Text),
    Column("sent_at", String(32)),
    Column("log_tag_id", String(70)),
    Column("created_at", BigInteger, nullable=False),
)

# One row: the evaluator has read the log up to `through_idx` (None: not started).
alert_progress = Table(
    "alert_progress",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("through_idx", BigInteger),
)
