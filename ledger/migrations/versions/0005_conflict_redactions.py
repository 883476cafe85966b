"""Conflict redactions: the refused envelope kept as evidence may lose its payload too.

conflicts.entry becomes nullable. The one UPDATE the database takes on conflicts clears
`entry` of a row that a `conflict_redactions` row names, changing nothing else; that row
keeps the refused entry's leaf hash (SHA-256 of 0x00 || entry, RFC 9162 section 2.1.1), so
the conflict stays countable and anyone who kept the bytes can still show they match.
conflict_redactions is append-only like redactions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_conflict_redactions"
down_revision = "0004_redactions"
branch_labels = None
depends_on = None

REFUSE_SQLITE = (
    "BEGIN SELECT RAISE(ABORT, 'patio: {verb} on {table} refused: the ledger is append-only'); END"
)
SANCTIONED = (
    "NEW.entry IS NULL AND OLD.entry IS NOT NULL AND NEW.id = OLD.id "
    "AND NEW.device_id = OLD.device_id AND NEW.seq = OLD.seq "
    "AND NEW.existing_idx = OLD.existing_idx AND NEW.received_at = OLD.received_at "
    "AND NEW.rule = OLD.rule "
    "AND EXISTS (SELECT 1 FROM conflict_redactions r WHERE r.conflict_id = OLD.id)"
)


def upgrade() -> None:
    """Create conflict_redactions; let conflicts.entry be cleared under one."""
    op.create_table(
        "conflict_redactions",
        sa.Column(
            "conflict_id", sa.Integer, sa.ForeignKey("conflicts.id"), primary_key=True,
            autoincrement=False,
        ),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),  # "retention" or "erasure"
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
    )  # fmt: skip
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE conflicts ALTER COLUMN entry DROP NOT NULL")
        op.execute(
            f"""
            CREATE FUNCTION patio_conflicts_redact_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'UPDATE' AND {SANCTIONED} THEN
                RETURN NEW;
              END IF;
              RAISE EXCEPTION 'patio: % on % refused: the ledger is append-only',
                TG_OP, TG_TABLE_NAME;
            END $$
            """
        )
        op.execute("DROP TRIGGER conflicts_append_only ON conflicts")
        op.execute(
            "CREATE TRIGGER conflicts_append_only BEFORE UPDATE OR DELETE ON conflicts "
            "FOR EACH ROW EXECUTE FUNCTION patio_conflicts_redact_only()"
        )
        op.execute(
            "CREATE TRIGGER conflict_redactions_append_only BEFORE UPDATE OR DELETE "
            "ON conflict_redactions FOR EACH ROW EXECUTE FUNCTION patio_refuse_rewrite()"
        )
        op.execute(
            "CREATE TRIGGER conflict_redactions_no_truncate BEFORE TRUNCATE ON conflict_redactions "
            "FOR EACH STATEMENT EXECUTE FUNCTION patio_refuse_rewrite()"
        )
        return
    # As in 0004: removing a NOT NULL leaves the stored rows valid, so SQLite's documented
    # schema edit applies (https://sqlite.org/lang_altertable.html#otheralter).
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'conflicts'"
    ).scalar_one()
    relaxed = sql.replace("entry BLOB NOT NULL", "entry BLOB", 1)
    if relaxed == sql:
        raise RuntimeError("conflicts.entry: unexpected SQLite schema, cannot relax NOT NULL")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'conflicts'", (relaxed,)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    op.execute("DROP TRIGGER conflicts_no_update")
    op.execute(
        "CREATE TRIGGER conflicts_no_update BEFORE UPDATE ON conflicts "
        f"WHEN NOT ({SANCTIONED}) " + REFUSE_SQLITE.format(verb="UPDATE", table="conflicts")
    )
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER conflict_redactions_no_{verb.lower()} BEFORE {verb} "
            "ON conflict_redactions " + REFUSE_SQLITE.format(verb=verb, table="conflict_redactions")
        )


def downgrade() -> None:
    """Not supported once evidence payloads were dropped."""
    raise NotImplementedError("0005_conflict_redactions cannot be downgraded")
