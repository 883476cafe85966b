"""Each rollup counts its entries and chains their log tag ids, so every report carries
the count and digest of the entries it used without reading them (docs/rollups.md).

`entries`: the entries whose first rolled-up sensor (code point order) is this row's; a
device's rows of an hour add up to its distinct entries there. `chain`: SHA-256 chained
over the log tag ids of every entry folded into the row, in log order; NULL when unknown.

Rows written before this migration have neither, and only the log can give them: the
rollups, their week markers and the report sums cached over them are cleared and the
progress mark reset, so the gateway's catch-up at start rebuilds them from the log (as
`patio reports rebuild` would). Once payloads were dropped (docs/retention.md) the log can
no longer rebuild the hours they were in, so the rows are kept as they are, with no chain
(NULL) and no entries counted: reports over them say their entries are unknown.

`report_digests` keeps, per community and local day of a report, the day's count and
digest with the week markers they were computed under, as `report_units` keeps sums.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0010"
down_revision = "g0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns; clear the rollups for the catch-up to rebuild, if the log can."""
    op.add_column("rollups", sa.Column("entries", sa.Integer, nullable=False, server_default="0"))
    op.add_column("rollups", sa.Column("chain", sa.LargeBinary, nullable=True))
    op.create_table(
        "report_digests",
        sa.Column("community_id", sa.String(64), primary_key=True),
        sa.Column("start_hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("end_hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("markers", sa.Text, nullable=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
    )
    if op.get_bind().execute(sa.text("SELECT count(*) FROM redactions")).scalar_one():
        return
    op.execute("DELETE FROM rollups")
    op.execute("DELETE FROM rollup_weeks")
    op.execute("DELETE FROM report_units")
    op.execute("UPDATE rollup_progress SET through_idx = -1")


def downgrade() -> None:
    """Drop the table and the columns (the rollups' sums stay as they are)."""
    op.drop_table("report_digests")
    op.execute("ALTER TABLE rollups DROP COLUMN chain")  # SQLite 3.35+ and PostgreSQL
    op.execute("ALTER TABLE rollups DROP COLUMN entries")
