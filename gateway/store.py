"""The gateway's own tables (communities, devices, apps, tokens, the reading index, rollups)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from ledger import storage

metadata = MetaData()

communities = Table(
    "communities",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),  # IANA
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("community_id", String(64), ForeignKey("communities.id"), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("revoked_at", String(32)),
    Column("created_at", String(32), nullable=False),
    Column("profile", Text),  # JCS of the declared sensors (contracts/device_types.py)
    Index("devices_community", "community_id"),
)

# Every key a device ever had, so old entries keep verifying after a rotation.
device_keys = Table(
    "device_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), ForeignKey("devices.id"), nullable=False),
    Column("public_key", String(44), nullable=False),
    Column("created_at", String(32), nullable=False),
    Index("device_keys_device", "device_id"),
)

# One row per change to a device (registered, rotated, revoked), written in the change's
# transaction: every gateway process polls it to drop what it has cached of those devices.
device_changes = Table(
    "device_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("created_at", String(32), nullable=False),
)

# Derived from the ledger (rebuilt by catching up from the last indexed entry): what the
# SaaS queries filter on.
readings = Table(
    "readings",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("community_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("start", String(32), nullable=False),
    Index("readings_community_start", "community_id", "start"),
    Index("readings_device_start", "device_id", "start"),
)

# -- rollups (gateway/rollups.py) --------------------------------------------------------
# Hourly per-device, per-sensor sums of energy_minute entries, derived from the ledger and
# written in the append's transaction. Times are Unix seconds (UTC); energy in mWh, power
# in mW, as in contracts/energy/hourly.py. Keyed as a report reads them, a community's hours
# in order, each hour's rows by device and sensor (migration g0007; a device never changes
# community); SQLite keeps the table in that order (WITHOUT ROWID). On PostgreSQL the
# migration leaves 30% of each page free (fillfactor 70) so that updates stay HOT.
rollups = Table(
    "rollups",
    metadata,
    Column("community_id", String(64), primary_key=True),
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("device_id", String(64), primary_key=True),
    Column("sensor", String(64), primary_key=True),
    Column("minutes", Integer, nullable=False),
    Column("energy_mwh", BigInteger),
    Column("peak_mw", BigInteger),
    Column("peak_minute", BigInteger),
    Column("first_idx", BigInteger, nullable=False),
    Column("last_idx", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# One row: every entry up to `through_idx` is in `rollups` (-1: none yet).
rollup_progress = Table(
    "rollup_progress",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("through_idx", BigInteger, nullable=False),
)
# Per community and UTC day (`hour / 86400`): the highest log index a rollup of that day
# was built from, raised in the append's transaction (migrations g0008, g0011).
rollup_days = Table(
    "rollup_days",
    metadata,
    Column("community_id", String(64), primary_key=True),
    Column("day", BigInteger, primary_key=True, autoincrement=False),
    Column("changed_idx", BigInteger, nullable=False),
)

# A chunk of report units summed (gateway/routes/reports.py), valid while the `rollup_days`
# markers it was summed under (`markers`, JSON) are unchanged; `sums` is JSON rows.
report_units = Table(
    "report_units",
    metadata,
    Column("community_id", String(64), primary_key=True),
    Column("chunk_sha256", String(64), primary_key=True),
    Column("markers", Text, nullable=False),
    Column("sums", Text, nullable=False),
)

# -- end of rollups ------------------------------------------------------------------------

MIGRATIONS = str(Path(__file__).with_name("migrations"))
VERSION_TABLE = "gateway_alembic_version"


def upgrade(engine: Engine) -> None:
    """Run the gateway's migrations (after the ledger's, on the same database)."""
    storage.upgrade(engine, migrations=MIGRATIONS, version_table=VERSION_TABLE)
