"""Ledger storage: SQLAlchemy tables, the one place that opens the database, and migrations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPICursor

metadata = MetaData()

entries = Table(
    "entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False, unique=True),
    # NULL once the payload was dropped under a redaction (migration 0004); nothing else
    # of the row ever changes.
    Column("entry", LargeBinary),
    Column("device_id", String(64)),
    Column("seq", BigInteger),
    Column("contract", String(128), nullable=False),
    Column("received_at", String(32), nullable=False),
    # Migration 0003: a device's one-per-minute slot (energy_minute `start`), else NULL.
    Column("minute", String(20)),
    Index("entries_device_seq", "device_id", "seq", unique=True),
    Index(
        "entries_device_minute",
        "device_id",
        "minute",
        unique=True,
        sqlite_where=text("minute IS NOT NULL"),
        postgresql_where=text("minute IS NOT NULL"),
    ),
)

# Why an entry's payload was dropped (migration 0004): append-only, and the only thing that
# lets the database clear entries.entry (its triggers check for the row).
redactions = Table(
    "redactions",
    metadata,
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
    Column("reason", String(32), nullable=False),  # "retention" or "erasure"
    Column("reference", String(200), nullable=False),  # the policy or the request
    Column("at", String(32), nullable=False),
)

# Per community: entry payloads older than `payload_days` are dropped (ledger.retention).
retention_policies = Table(
    "retention_policies",
    metadata,
    Column("community_id", String(64), primary_key=True),
    Column("payload_days", Integer, nullable=False),
    Column("updated_at", String(32), nullable=False),
)

# Refused resubmissions kept as evidence: `rule` says which key they collided on, "seq" (the
# same (device_id, seq) with other bytes) or "minute" (a second aggregate for a device-minute).
conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("existing_idx", BigInteger, ForeignKey("entries.idx"), nullable=False),
    # NULL once the evidence's payload was dropped under a conflict redaction (migration 0005).
    Column("entry", LargeBinary),
    Column("received_at", String(32), nullable=False),
    Column("rule", String(16), nullable=False, server_default="seq"),  # migration 0003
)

# Why a conflict's refused entry was dropped (migration 0005): append-only, the only thing
# that lets the database clear conflicts.entry; keeps the refused entry's leaf hash.
conflict_redactions = Table(
    "conflict_redactions",
    metadata,
    Column(
        "conflict_id", Integer, ForeignKey("conflicts.id"), primary_key=True, autoincrement=False
    ),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("reason", String(32), nullable=False),  # "retention" or "erasure"
    Column("reference", String(200), nullable=False),
    Column("at", String(32), nullable=False),
)

# Complete-subtree hashes (ledger.merkle), 256 to a row: node (level, i) is bytes
# [32 * (i % 256), 32 * (i % 256 + 1)) of row (level, i // 256).
merkle_chunks = Table(
    "merkle_chunks",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("chunk", BigInteger, primary_key=True, autoincrement=False),
    Column("hashes", LargeBinary, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

anchors = Table(
    "anchors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, ForeignKey("checkpoints.tree_size"), nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("chain_id", BigInteger, nullable=False),
    Column("contract", String(42)),
    Column("tx_hash", String(66), nullable=False),
    Column("nonce", BigInteger, nullable=False),
    Column("block_number", BigInteger),
    Column("confirmations", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("raw_tx", LargeBinary),  # migration 0002: the signed bytes, rebroadcast as sent
    Index("anchors_tree_size", "tree_size"),
)

CHUNK_SIZE = 256
MIGRATIONS = str(Path(__file__).with_name("migrations"))
VERSION_TABLE = "ledger_alembic_version"


def database_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL: PATIO_DATABASE_URL if given, else SQLite under the data dir."""
    if not url:
        return f"sqlite:///{data_dir / 'ledger.sqlite3'}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class DriverCursor:
    """The driver's own cursor inside a SQLAlchemy transaction, for the append hot path.

    SQLAlchemy spends about 60 us of Python on each statement it runs, more than SQLite
    takes to run it; a small commit runs half a dozen. Statements are written with `?`
    marks and translated once for drivers that use `%s`.
    """

    def __init__(self, conn: Connection, *, binary: bool = False) -> None:
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:
            raise RuntimeError("connection is closed")
        # `binary`: PostgreSQL sends the rows in binary, a bytea as its bytes (in text, as
        # hex the driver decodes: 3.5 us of the alert evaluator's 6 for an entry's row).
        binary &= conn.dialect.name == "postgresql"
        self.cursor: DBAPICursor = dbapi.cursor(binary=True) if binary else dbapi.cursor()
        self._format = conn.dialect.paramstyle != "qmark"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> DBAPICursor:
        """Run one statement; the cursor holds its rows."""
        self.cursor.execute(sql.replace("?", "%s") if self._format else sql, params)
        return self.cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row."""
        self.cursor.executemany(sql.replace("?", "%s") if self._format else sql, rows)

    def pipeline(self) -> AbstractContextManager[Any]:
        """PostgreSQL: send statements without waiting for each answer (psycopg pipeline
        mode); a read waits for what was sent before it. A no-op for SQLite."""
        pipeline = getattr(self.cursor.connection, "pipeline", None)
        return pipeline() if pipeline is not None else nullcontext()

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row."""
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]


BUSY_TIMEOUT_MS = 30_000
# A WAL longer than this after a PASSIVE checkpoint is restarted (`checkpoint_wal`), and a
# restarted WAL file is cut back to this size (journal_size_limit): 64 MiB.
WAL_RESTART_BYTES = 64 * 1024 * 1024
# How long a RESTART checkpoint may wait for readers of old snapshots; new writers wait
# meanwhile, so this bounds the stall it causes. Busy past it: tried again next time.
WAL_RESTART_WAIT_MS = 200


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes each commit durable
    # before it is acknowledged; the driver's own transaction handling is switched off so
    # that `_sqlite_begin` decides how each transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_RESTART_BYTES}")
    # 64 MiB of page cache: leaf-hash lookups land at random places in their index.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def checkpoint_wal(engine: Engine, *, restart_bytes: int = WAL_RESTART_BYTES) -> None:
    """Copy SQLite's WAL into the database file; nothing to do on PostgreSQL.

    First PASSIVE, which neither waits for nor blocks anyone. Under sustained load that is
    not enough: while some reader always holds a snapshot in the WAL, the WAL never starts
    over from its beginning and grows without bound ("checkpoint starvation",
    https://sqlite.org/wal.html#avoiding_excessively_large_wal_files; bench.gateway grew
    one to 385 MB in 20 s). So past `restart_bytes` a RESTART checkpoint follows, which
    waits up to WAL_RESTART_WAIT_MS for those readers to move on (holding back new writers
    meanwhile) so that the next commit writes the WAL from its start.
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        # Each statement in a transaction of its own: a read left open would hold a
        # snapshot, which RESTART would then wait for.
        _, frames, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        conn.commit()
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        conn.commit()
        if frames * page_size <= restart_bytes:
            return
        conn.exec_driver_sql(f"PRAGMA busy_timeout={WAL_RESTART_WAIT_MS}")
        try:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)").one()
            conn.commit()
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _sqlite_begin(connection: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE), so two processes never
    # deadlock upgrading a read lock; readers start a plain snapshot.
    writing = connection.get_execution_options().get("patio_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def open_engine(
    url: str, *, migrate: bool = True, autocheckpoint: bool = True, ping: bool = True
) -> Engine:
    """Create the engine for `url` and bring its schema to the newest migration.

    `autocheckpoint=False` (SQLite): commits never copy the WAL into the database file,
    for a writer whose WAL some other connection checkpoints (`checkpoint_wal`). The
    commit that crosses the 1,000-page mark otherwise does it: 15-130 ms instead of 1.
    `ping=False` (PostgreSQL): connections are not tested with a round trip when taken
    from the pool (109 against 11 us a checkout here); after a server restart the first
    statement on a stale connection fails, and the pool then drops every stale one.
    """
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # SQLite would create the file from the umask (often world-readable); its -wal
            # and -shm files take the database file's mode, so 0600 here covers all three.
            os.close(os.open(path, os.O_CREAT | os.O_RDONLY, 0o600))
        # LIFO: the writer's commits keep taking the connection whose page cache holds what
        # they wrote. FIFO handed them each pooled connection in turn once a lookup inside an
        # append had opened a second one, and a connection re-reads the pages another
        # connection's commit changed (+20-30 us an envelope of the writer's CPU on SQLite).
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_use_lifo=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        if not autocheckpoint:
            event.listen(engine, "connect", _no_autocheckpoint)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(
            url, pool_pre_ping=ping, pool_size=10, max_overflow=20, pool_use_lifo=True
        )
    if migrate:
        upgrade(engine)
    return engine


def configure_migrations(target: MetaData) -> None:
    """The body of each package's Alembic env.py: migrate `target` on the handed-in connection."""
    from alembic import context

    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target,
        version_table=context.config.get_main_option("version_table") or "alembic_version",
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def upgrade(
    engine: Engine, *, migrations: str = MIGRATIONS, version_table: str = VERSION_TABLE
) -> None:
    """Run Alembic migrations up to head: the ledger's, or another package's on the same
    database (each with its own version table)."""
    config = Config()
    config.set_main_option("script_location", migrations)
    config.set_main_option("version_table", version_table)
    with engine.connect() as connection:
        connection = connection.execution_options(patio_write=True)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
