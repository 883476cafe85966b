"""Rollups hold only minutes with energy or power: the rows of other sensors are deleted.

A report reads only sensors with an energy role, measured in W, kW or Wh; temperature,
switch and other readings were rolled up into rows that nothing read, one B-tree write
each at ingest (contracts/energy/minute.py `add_entry`, docs/rollups.md). A row whose
minutes carried neither energy nor power (`energy_mwh` and `peak_mw` both NULL) is such a
row. The cached report sums are cleared with them; reports recompute and keep them again.
"""

from __future__ import annotations

from alembic import op

revision = "g0009"
down_revision = "g0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Delete the rollups no report reads, and the report sums cached over them."""
    op.execute("DELETE FROM rollups WHERE energy_mwh IS NULL AND peak_mw IS NULL")
    op.execute("DELETE FROM report_units")


def downgrade() -> None:
    """Nothing to restore: `patio reports rebuild` recomputes rollups from the log."""
