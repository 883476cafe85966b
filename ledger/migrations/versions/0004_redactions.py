"""Redactions: entry payloads may be dropped, only with an append-only redaction row.

entries.entry becomes nullable. The one UPDATE the database now takes on entries clears
`entry` of a row that a `redactions` row names, changing nothing else; every other UPDATE
or DELETE of entries, checkpoints, conflicts and redactions is still refused (and TRUNCATE
on PostgreSQL). Leaf hashes and Merkle nodes stay, so proofs keep verifying.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_redactions"
down_revision = "0003_entry_minute"
branch_labels = None
depends_on = None

REFUSE_SQLITE = (
    "BEGIN SELECT RAISE(ABORT, 'patio: {verb} on {table} refused: the ledger is append-only'); END"
)
# The only UPDATE of an entry the ledger allows: its payload bytes cleared, under a
# redaction recorded for it, every other column as it was.
SANCTIONED = (
    "NEW.entry IS NULL AND OLD.entry IS NOT NULL AND NEW.idx = OLD.idx "
    "AND NEW.leaf_hash = OLD.leaf_hash AND NEW.device_id IS NOT DISTINCT FROM OLD.device_id "
    "AND NEW.seq IS NOT DISTINCT FROM OLD.seq AND NEW.contract = OLD.contract "
    "AND NEW.received_at = OLD.received_at AND NEW.minute IS NOT DISTINCT FROM OLD.minute "
    "AND EXISTS (SELECT 1 FROM redactions r WHERE r.idx = OLD.idx)"
)


def upgrade() -> None:
    """Create redactions and retention_policies; let entries.entry be cleared under a redaction."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "redactions",
        sa.Column("idx", sa.BigInteger, sa.ForeignKey("entries.idx"), primary_key=True),
        sa.Column("reason", sa.String(32), nullable=False),  # "retention" or "erasure"
        sa.Column("reference", sa.String(200), nullable=False),  # the policy or request
        sa.Column("at", sa.String(32), nullable=False),
    )
    # Per community: payloads older than `payload_days` are dropped by `patio retention apply`
    # and the gateway's retention task.
    op.create_table(
        "retention_policies",
        sa.Column("community_id", sa.String(64), primary_key=True),
        sa.Column("payload_days", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    if postgres:
        op.execute("ALTER TABLE entries ALTER COLUMN entry DROP NOT NULL")
        op.execute(
            f"""
            CREATE FUNCTION patio_entries_redact_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'UPDATE' AND {SANCTIONED} THEN
                RETURN NEW;
              END IF;
              RAISE EXCEPTION 'patio: % on % refused: the ledger is append-only',
                TG_OP, TG_TABLE_NAME;
            END $$
            """
        )
        op.execute("DROP TRIGGER entries_append_only ON entries")
        op.execute(
            "CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries "
            "FOR EACH ROW EXECUTE FUNCTION patio_entries_redact_only()"
        )
        op.execute(
            "CREATE TRIGGER redactions_append_only BEFORE UPDATE OR DELETE ON redactions "
            "FOR EACH ROW EXECUTE FUNCTION patio_refuse_rewrite()"
        )
        op.execute(
            "CREATE TRIGGER redactions_no_truncate BEFORE TRUNCATE ON redactions "
            "FOR EACH STATEMENT EXECUTE FUNCTION patio_refuse_rewrite()"
        )
        return
    # SQLite cannot drop a NOT NULL with ALTER TABLE, and rebuilding the table would drop
    # its triggers and trip the conflicts foreign key. Removing a NOT NULL leaves the
    # stored rows valid, so SQLite's documented schema edit applies
    # (https://sqlite.org/lang_altertable.html#otheralter).
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
    ).scalar_one()
    relaxed = sql.replace("entry BLOB NOT NULL", "entry BLOB", 1)
    if relaxed == sql:
        raise RuntimeError("entries.entry: unexpected SQLite schema, cannot relax NOT NULL")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'entries'", (relaxed,)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    op.execute("DROP TRIGGER entries_no_update")
    sanctioned = SANCTIONED.replace("IS NOT DISTINCT FROM", "IS")
    op.execute(
        "CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries "
        f"WHEN NOT ({sanctioned}) " + REFUSE_SQLITE.format(verb="UPDATE", table="entries")
    )
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER redactions_no_{verb.lower()} BEFORE {verb} ON redactions "
            + REFUSE_SQLITE.format(verb=verb, table="redactions")
        )


def downgrade() -> None:
    """Not supported once payloads were dropped: NOT NULL cannot come back over NULLs."""
    raise NotImplementedError("0004_redactions cannot be downgraded: dropped payloads are gone")
