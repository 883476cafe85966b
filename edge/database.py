"""The agent's one SQLite file: schema, transactions, state, raw samples and their retention."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.drivers import Channel, Sample
from edge.errors import EdgeError

SCHEMA_VERSION = 1
MINUTE_MS = 60_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, kind TEXT NOT NULL, unit TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (ts_ms INTEGER NOT NULL, channel TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts_ms);
CREATE INDEX IF NOT EXISTS samples_channel_ts ON samples (channel, ts_ms);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    contract TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    acked_ms INTEGER,
    ack_status TEXT,
    log_tag_id TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (contract, seq) WHERE acked_ms IS NULL;
CREATE INDEX IF NOT EXISTS outbox_acked ON outbox (acked_ms) WHERE acked_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    contract TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    error TEXT NOT NULL,
    dead_ms INTEGER NOT NULL
);
"""


def to_ms(seconds: float) -> int:
    """Seconds since the epoch as integer milliseconds (exact minute boundaries)."""
    return round(seconds * 1000)


class Store:
    """The agent's database: every table lives here, behind one connection."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) the database in WAL mode with full fsync on commit."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # WAL lets `patio edge status` read while the agent writes. synchronous=FULL
            # fsyncs every commit, so a power cut cannot roll back a seq already sent.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA busy_timeout=10000")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise EdgeError(f"{path} was written by a newer agent (schema {version})")
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise EdgeError(f"cannot open the agent database {path}: {exc}") from exc
        return cls(connection, path)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def get_state(self, key: str) -> str | None:
        """A value of the state table."""
        row = self.connection.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        """Set a value of the state table (inside the caller's transaction)."""
        self.connection.execute(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def claim(self, device_id: str) -> None:
        """Bind the database to one device: its seq counter belongs to that device's key."""
        with self.transaction():
            owner = self.get_state("device_id")
            if owner is None:
                self.set_state("device_id", device_id)
            elif owner != device_id:
                raise EdgeError(
                    f"{self.path} belongs to device {owner!r}, not {device_id!r}; "
                    "use another data_dir"
                )

    def register_channels(self, channels: Iterable[Channel]) -> None:
        """Record each channel's kind and unit (kept for channels removed from the config)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO channels (name, kind, unit) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, unit = excluded.unit",
                [(c.name, c.kind, c.unit) for c in channels],
            )

    def channels(self) -> dict[str, Channel]:
        """Every channel ever registered, by name."""
        rows = self.connection.execute("SELECT name, kind, unit FROM channels")
        return {name: Channel(name, kind, unit) for name, kind, unit in rows}

    def add_samples(self, samples: Iterable[Sample]) -> None:
        """Store raw samples in one transaction."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO samples (ts_ms, channel, value) VALUES (?, ?, ?)",
                [(to_ms(s.ts), s.channel, s.value) for s in samples],
            )

    def minutes_with_samples(self, *, since_ms: int, before_ms: int) -> list[int]:
        """Start (ms) of each minute in [since, before) holding at least one sample."""
        rows = self.connection.execute(
            "SELECT DISTINCT ts_ms / ? * ? FROM samples WHERE ts_ms >= ? AND ts_ms < ? ORDER BY 1",
            (MINUTE_MS, MINUTE_MS, since_ms, before_ms),
        )
        return [int(row[0]) for row in rows]

    def window(self, start_ms: int, end_ms: int) -> dict[str, list[float | None]]:
        """Each channel's sample values in [start, end), in time order."""
        values: dict[str, list[float | None]] = {}
        rows = self.connection.execute(
            "SELECT channel, value FROM samples WHERE ts_ms >= ? AND ts_ms < ? "
            "ORDER BY channel, ts_ms, rowid",
            (start_ms, end_ms),
        )
        for channel, value in rows:
            values.setdefault(channel, []).append(value)
        return values

    def last_value_before(self, channel: str, ts_ms: int) -> float | None:
        """The channel's latest present value before `ts_ms` (a counter's baseline)."""
        row = self.connection.execute(
            "SELECT value FROM samples WHERE channel = ? AND ts_ms < ? AND value IS NOT NULL "
            "ORDER BY ts_ms DESC, rowid DESC LIMIT 1",
            (channel, ts_ms),
        ).fetchone()
        return None if row is None else float(row[0])

    def prune_samples(self, before_ms: int) -> int:
        """Delete samples older than `before_ms`, keeping each channel's newest (a baseline)."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM samples WHERE ts_ms < ? AND rowid NOT IN "
                "(SELECT max(rowid) FROM samples WHERE value IS NOT NULL GROUP BY channel)",
                (before_ms,),
            )
            return cursor.rowcount
