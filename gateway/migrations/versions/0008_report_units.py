"""Report unit sums cached per chunk of hours, and a change marker per week of rollups.

`rollup_weeks` holds, per community and window of 7 UTC days (`hour / 604800`), the
highest log index any rollup of that window was ever built from: `Rollups` raises it in
the append's transaction, so a late minute into an old week changes its marker.
`report_units` holds the rollups of a chunk of report units (contracts/energy/aggregate.py)
summed as gateway/routes/reports.py's SQL sums them, with the markers of the windows they
were summed under; a report uses them only while those markers are unchanged (docs/rollups.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0008"
down_revision = "g0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create both tables; the markers of the rollups already written are computed."""
    op.create_table(
        "rollup_weeks",
        sa.Column("community_id", sa.String(64), primary_key=True),
        sa.Column("week", sa.BigInteger, primary_key=True),
        sa.Column("changed_idx", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO rollup_weeks (community_id, week, changed_idx) "
        "SELECT community_id, hour / 604800, max(last_idx) FROM rollups "
        "GROUP BY community_id, hour / 604800"
    )
    op.create_table(
        "report_units",
        sa.Column("community_id", sa.String(64), primary_key=True),
        sa.Column("chunk_sha256", sa.String(64), primary_key=True),
        sa.Column("markers", sa.Text, nullable=False),
        sa.Column("sums", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("report_units")
    op.drop_table("rollup_weeks")
