"""Initial ledger schema: entries, conflicts, Merkle chunks, checkpoints, anchors."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The database itself refuses to rewrite history (DESIGN.md, Storage and scale).
APPEND_ONLY = ("entries", "checkpoints", "conflicts")


def upgrade() -> None:
    """Create the tables and the append-only triggers."""
    op.create_table(
        "entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("device_id", sa.String(64)),
        sa.Column("seq", sa.BigInteger),
        sa.Column("contract", sa.String(128), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
    )
    op.create_index("entries_device_seq", "entries", ["device_id", "seq"], unique=True)
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("existing_idx", sa.BigInteger, sa.ForeignKey("entries.idx"), nullable=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "merkle_chunks",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("chunk", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hashes", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "anchors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "tree_size", sa.BigInteger, sa.ForeignKey("checkpoints.tree_size"), nullable=False
        ),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("chain_id", sa.BigInteger, nullable=False),
        sa.Column("contract", sa.String(42)),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("nonce", sa.BigInteger, nullable=False),
        sa.Column("block_number", sa.BigInteger),
        sa.Column("confirmations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("anchors_tree_size", "anchors", ["tree_size"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION patio_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'patio: % on % refused: the ledger is append-only',
                TG_OP, TG_TABLE_NAME;
            END $$
            """
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION patio_refuse_rewrite()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION patio_refuse_rewrite()"
            )
    else:
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'patio: {verb} on {table} refused: "
                    "the ledger is append-only'); END"
                )


def downgrade() -> None:
    """Drop everything (development only: history is not meant to be dropped)."""
    for table in ("anchors", "checkpoints", "merkle_chunks", "conflicts", "entries"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS patio_refuse_rewrite()")
