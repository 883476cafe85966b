"""One aggregate per device and minute: entries.minute with a unique index, conflicts.rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from ledger.encoding import parse_json, parse_rfc3339
from ledger.errors import FormatError

revision = "0003_entry_minute"
down_revision = "0002_anchors_raw_tx"
branch_labels = None
depends_on = None

PAGE = 5_000


def _energy_minutes(conn: sa.Connection) -> Iterator[tuple[int, str, str]]:
    """(idx, device_id, start) of every stored energy_minute whose start parses strictly."""
    last = -1
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT idx, device_id, entry FROM entries WHERE idx > :last AND "
                "device_id IS NOT NULL AND contract LIKE 'energy_minute@%' ORDER BY idx LIMIT :n"
            ),
            {"last": last, "n": PAGE},
        ).all()
        if not rows:
            return
        for idx, device_id, entry in rows:
            try:
                start: Any = parse_json(bytes(entry), what="entry")["payload"]["start"]
                parse_rfc3339(start, what="start", fraction=False)
            except (FormatError, KeyError, TypeError):
                continue  # not a slot the rule can name; the audit reads the entry itself
            yield idx, device_id, start
        last = rows[-1][0]


def _first_per_minute(conn: sa.Connection) -> list[dict[str, Any]]:
    """The first entry of each (device, start): only it takes the slot in the unique index;
    later ones (written before the rule) keep a NULL minute and `patio audit` names them."""
    seen: set[tuple[str, str]] = set()
    firsts = []
    for idx, device_id, start in _energy_minutes(conn):
        if (device_id, start) not in seen:
            seen.add((device_id, start))
            firsts.append({"idx": idx, "minute": start})
    return firsts


def upgrade() -> None:
    """Add entries.minute, backfill it from the payloads, index it; add conflicts.rule."""
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    # Plain ADD COLUMN (no batch copy: the triggers of 0001 stay on the tables).
    op.add_column("entries", sa.Column("minute", sa.String(20), nullable=True))
    op.add_column(
        "conflicts", sa.Column("rule", sa.String(16), nullable=False, server_default="seq")
    )
    firsts = _first_per_minute(conn)
    if firsts:
        # The append-only triggers refuse every UPDATE; this one fills a new column only.
        if postgres:
            op.execute("ALTER TABLE entries DISABLE TRIGGER entries_append_only")
        else:
            op.execute("DROP TRIGGER entries_no_update")
        conn.execute(sa.text("UPDATE entries SET minute = :minute WHERE idx = :idx"), firsts)
        if postgres:
            op.execute("ALTER TABLE entries ENABLE TRIGGER entries_append_only")
        else:
            op.execute(
                "CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries "
                "BEGIN SELECT RAISE(ABORT, 'patio: UPDATE on entries refused: "
                "the ledger is append-only'); END"
            )
    op.create_index(
        "entries_device_minute",
        "entries",
        ["device_id", "minute"],
        unique=True,
        sqlite_where=sa.text("minute IS NOT NULL"),
        postgresql_where=sa.text("minute IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop the index and the columns."""
    op.drop_index("entries_device_minute", "entries")
    op.drop_column("conflicts", "rule")
    op.drop_column("entries", "minute")
