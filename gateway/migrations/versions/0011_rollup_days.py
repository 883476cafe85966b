"""Change markers per UTC day instead of per 7 UTC days.

`rollup_days` holds, per community and UTC day (`hour / 86400`), the highest log index
any rollup of that day was ever built from, as `rollup_weeks` (g0008) did per 7 days. With
a week's window a report over any day of the current week was summed and digested again on
every request, because each batch of today's minutes moved that week's marker; with a
day's window the earlier days keep their cached sums and digests. Both report caches
(`report_units`, `report_digests`) name their windows in their markers, so they are
cleared: the next reports compute and keep them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0011"
down_revision = "g0010"
branch_labels = None
depends_on = None


def _markers(table: str, column: str, seconds: int) -> None:
    """Create `table` and fill it with the markers of the rollups already written."""
    op.create_table(
        table,
        sa.Column("community_id", sa.String(64), primary_key=True),
        sa.Column(column, sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("changed_idx", sa.BigInteger, nullable=False),
    )
    op.execute(
        f"INSERT INTO {table} (community_id, {column}, changed_idx) "
        f"SELECT community_id, hour / {seconds}, max(last_idx) FROM rollups "
        f"GROUP BY community_id, hour / {seconds}"
    )
    op.execute("DELETE FROM report_units")
    op.execute("DELETE FROM report_digests")


def upgrade() -> None:
    """Day markers from the rollups; the week markers and both report caches go."""
    _markers("rollup_days", "day", 86_400)
    op.drop_table("rollup_weeks")


def downgrade() -> None:
    """Week markers from the rollups again."""
    _markers("rollup_weeks", "week", 604_800)
    op.drop_table("rollup_days")
