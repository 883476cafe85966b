"""Rollups keyed by (community, hour, device, sensor): one B-tree fewer to write per row.

A device never changes community, so that key is as unique as (device, hour, sensor). It
is the order a report reads a community's hours in, so on SQLite the table itself is kept
in it (WITHOUT ROWID): a report scans each hour's rows in one place instead of looking each
one up through `rollups_community_hour`, which is dropped, and an upsert writes the table
alone instead of the table, its primary key and that index.
"""

from __future__ import annotations

from alembic import op

revision = "g0007"
down_revision = "g0006"
branch_labels = None
depends_on = None

COLUMNS = (
    "device_id, hour, sensor, community_id, minutes, energy_mwh, peak_mw, peak_minute, "
    "first_idx, last_idx"
)


def _sqlite_table(name: str, key: str, *, without_rowid: bool) -> None:
    op.execute(
        f"CREATE TABLE {name} (device_id VARCHAR(64) NOT NULL, hour BIGINT NOT NULL, "
        "sensor VARCHAR(64) NOT NULL, community_id VARCHAR(64) NOT NULL, "
        "minutes INTEGER NOT NULL, energy_mwh BIGINT, peak_mw BIGINT, peak_minute BIGINT, "
        f"first_idx BIGINT NOT NULL, last_idx BIGINT NOT NULL, PRIMARY KEY ({key}))"
        + (" WITHOUT ROWID" if without_rowid else "")
    )


def _sqlite_copy(key: str, *, without_rowid: bool) -> None:
    _sqlite_table("rollups_new", key, without_rowid=without_rowid)
    op.execute(f"INSERT INTO rollups_new ({COLUMNS}) SELECT {COLUMNS} FROM rollups ORDER BY {key}")
    op.drop_table("rollups")
    op.rename_table("rollups_new", "rollups")


def upgrade() -> None:
    """Re-key rollups by (community_id, hour, device_id, sensor) and drop the extra index."""
    op.drop_index("rollups_community_hour", table_name="rollups")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rollups DROP CONSTRAINT rollups_pkey")
        op.create_primary_key(
            "rollups_pkey", "rollups", ["community_id", "hour", "device_id", "sensor"]
        )
        return
    _sqlite_copy("community_id, hour, device_id, sensor", without_rowid=True)


def downgrade() -> None:
    """Back to g0004's key (device_id, hour, sensor) and its index by community and hour."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rollups DROP CONSTRAINT rollups_pkey")
        op.create_primary_key("rollups_pkey", "rollups", ["device_id", "hour", "sensor"])
    else:
        _sqlite_copy("device_id, hour, sensor", without_rowid=False)
    op.create_index(
        "rollups_community_hour", "rollups", ["community_id", "hour", "device_id", "sensor"]
    )
