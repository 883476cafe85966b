"""Retention benchmark: time and database size before and after dropping every payload of
`--devices` devices over `--days` days (docs/retention.md), SQLite and PostgreSQL.

Run: .venv/bin/python -m bench.retention [--devices 50] [--days 3] [--database-url URL]
       [--workers 2] [--dir DIR]
Registers the devices through the registry (change_registry, as the admin API does), then
builds in bulk what the gateway's writer would write for one energy_minute a minute per
device (8 readings, signed by the device's key), received a minute after its minute and
`--days` + 1 days ago at the oldest, so a 1-day policy drops them all: `--workers` processes
sign and make the entry bytes and leaf hashes (`entry_bytes`, `merkle.leaf_hash`), reading
index rows and rollup sums; the main process writes them in big transactions (executemany
on SQLite without journal or fsync, COPY on PostgreSQL), every tree level and one signed
checkpoint (tests/bench/test_retention_build.py: the same rows as appending them one by
one). Then it times gateway.retention.apply (the code of the periodic task and of `patio
retention apply`) on the log opened as the gateway opens it, checks that inclusion proofs
of dropped entries still verify (also with `patio verify`), and VACUUMs. Prints one line
per figure.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text

from contracts.device_registry import RegistryChange
from contracts.energy.minute import HourKey, HourTotals, add_entry
from gateway import readings, retention
from gateway.rollups import Rollups
from gateway.store import communities, devices, upgrade
from gateway.submissions import change_registry
from ledger import merkle
from ledger.bundle import log_tag_id
from ledger.encoding import b64encode, canonical_json, rfc3339_utc
from ledger.keys import NamedKey
from ledger.log import Log, entry_bytes
from ledger.note import Checkpoint
from ledger.storage import CHUNK_SIZE, DriverCursor, open_engine
from ledger.verify import verify_bundle

COMMUNITY = "bench-hoa"
CONTRACT = "energy_minute@1"


def size_bytes(engine: Engine, path: Path | None) -> int:
    """The database's size: the SQLite file (after a WAL checkpoint), or PostgreSQL's
    relations of the ledger tables (heap, TOAST and indexes)."""
    if path is not None:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return path.stat().st_size
    with engine.connect() as conn:
        total = conn.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = current_schema()"
            )
        ).scalar_one()
    return int(total)


def _job(args: tuple[int, str, int, int, int]) -> Job:
    """`count` minutes of one device from minute `first` on, logged from index `index`
    (worker process): the entries, readings and rollups the gateway writes for them."""
    index, seed, epoch, first, count = args
    key = NamedKey.from_text(seed)
    job = Job(first_index=index)
    for n in range(first, first + count):
        start = epoch + 60 * n
        payload = minute_payload(key.name, n, start)
        # The payload holds plain values only (ASCII, integral numbers as ints), for which
        # canonical_json is exactly this orjson call (ledger/encoding.py); checked once a job.
        jcs = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        if n == first and jcs != canonical_json(payload):
            raise AssertionError("the bench payload is not plain JCS")
        received = rfc3339_utc(datetime.fromtimestamp(start + 60, UTC))
        sig = b64encode(key.sign(jcs))
        data = entry_bytes(contract=CONTRACT, payload_jcs=jcs, sig=sig, received_at=received)
        leaf = merkle.leaf_hash(data)
        minute = payload["start"]
        job.entries.append((index, leaf, data, key.name, n, CONTRACT, received, minute))
        job.leaves.append(leaf)
        # As ReadingIndex.write and Rollups.write index an accepted energy_minute.
        job.readings.append((index, COMMUNITY, key.name, minute[:-1] + ".000Z"))
        add_entry(job.totals, index, key.name, payload, log_tag_id(leaf).encode())
        index += 1
    return job


@dataclass
class Job:
    """What `_job` hands back: rows from `first_index` on."""

    first_index: int
    entries: list[tuple[object, ...]] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    readings: list[tuple[int, str, str, str]] = field(default_factory=list)
    totals: dict[HourKey, HourTotals] = field(default_factory=dict)


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value


def minute_payload(device: str, seq: int, start: int) -> dict[str, Any]:
    """The gateway bench's payload (bench.ledger.minute: 8 readings) for the minute starting
    at `start`, with integral numbers as ints."""
    readings: dict[str, Any] = {
        f"t{i}": {
            "unit": "Cel",
            "n": 60,
            "missing": 0,
            "avg": _number(20 + i + seq % 7 / 10),
            "min": 19.5 + i,
            "max": 21.25 + i,
        }
        for i in range(6)
    }
    readings["meter"] = {"unit": "Wh", "sum": 12.5 + seq % 11}
    readings["fan"] = {"unit": "bool", "any": True, "on_fraction": 0.25}
    return {
        "device_id": device,
        "seq": seq,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "period_s": 60,
        "readings": readings,
    }


def register(conn: Connection, device_count: int) -> list[NamedKey]:
    """The bench community and `device_count` new devices in the gateway's tables."""
    keys = [NamedKey.generate(f"bench-{d:03d}") for d in range(device_count)]
    now = rfc3339_utc(datetime.now(UTC))
    conn.execute(communities.insert().values(id=COMMUNITY, name=COMMUNITY, created_at=now))
    conn.execute(
        devices.insert(),
        [
            {"id": k.name, "community_id": COMMUNITY, "public_key": k.public_key_b64,
             "created_at": now}
            for k in keys
        ],
    )  # fmt: skip
    return keys


def enrol(log: Log, keys: list[NamedKey], registry: NamedKey) -> None:
    """The bench community and these devices registered as the gateway's admin API does:
    registry entries signed by `registry`, appended with their directory rows."""
    at = rfc3339_utc(datetime.now(UTC))
    changes = [
        RegistryChange(
            "register_community", {"id": COMMUNITY, "name": COMMUNITY, "time_zone": "UTC"}, at
        )
    ]
    changes += [
        RegistryChange(
            "register_device",
            {"id": k.name, "community_id": COMMUNITY, "public_key": k.public_key_b64,
             "profile": None},
            at,
        )
        for k in keys
    ]  # fmt: skip
    for change in changes:
        verdict = change_registry(change, log=log, signer=registry)
        if verdict.recorded != "accepted":
            raise RuntimeError(f"registry change refused: {verdict.result}")


def build(
    url: str,
    keys: list[NamedKey],
    *,
    minutes: int,
    signer: NamedKey,
    workers: int,
    epoch: int,
    job_minutes: int = 1440,
    progress: bool = True,
) -> int:
    """Log `minutes` minutes of each device in bulk after the entries of the unsealed log at
    `url`, `job_minutes` of every device in turn, oldest first; then the tree's nodes and
    one checkpoint signed by `signer` (origin: its name). Returns the tree size."""
    engine = bulk_engine(url)
    with engine.connect() as conn:
        # What the log holds already (the registry entries), unsealed: the tree is built
        # over it too.
        leaves = bytearray(
            b"".join(
                bytes(row[0])
                for row in DriverCursor(conn)
                .execute("SELECT leaf_hash FROM entries ORDER BY idx")
                .fetchall()
            )
        )
        if DriverCursor(conn).scalar("SELECT count(*) FROM checkpoints"):
            raise ValueError("the bulk builder extends an unsealed log only")
    jobs, index = [], len(leaves) // merkle.HASH_SIZE
    for first in range(0, minutes, job_minutes):
        count = min(job_minutes, minutes - first)
        for key in keys:
            jobs.append((index, key.to_text(), epoch, first, count))
            index += count
    started = time.perf_counter()
    with engine.connect() as conn, multiprocessing.get_context("spawn").Pool(workers) as pool:
        writer = BulkWriter(conn)
        reported = 0
        for job in pool.imap(_job, jobs, chunksize=1):
            writer.add(job)
            leaves += b"".join(job.leaves)
            if len(leaves) // 32 - reported >= 1_000_000 and progress:
                reported = len(leaves) // 32
                writer.commit()
                took = time.perf_counter() - started
                print(
                    f"  {reported:,} entries in {took:,.0f} s ({reported / took:,.0f}/s), "
                    f"load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            elif writer.pending >= COMMIT_EVERY:
                writer.commit()
        levels = levels_over(bytes(leaves))
        del leaves
        writer.finish(levels, signer)
    engine.dispose()
    return index


COMMIT_EVERY = 200_000  # entries a bulk transaction


def bulk_engine(url: str) -> Engine:
    """An engine for the one-off build: on SQLite no journal, no fsync and 2 GiB of page
    cache (a crash means building again); on PostgreSQL commits without waiting for the WAL
    flush. The log is reopened normally afterwards."""
    if not url.startswith("sqlite"):
        engine = open_engine(url, migrate=False)
        event.listen(engine, "connect", _asynchronous_commit)
        return engine
    engine = create_engine(url)
    event.listen(engine, "connect", _no_journal)
    return engine


def _asynchronous_commit(dbapi: Any, _record: Any) -> None:
    dbapi.execute("SET synchronous_commit = off")
    dbapi.commit()


def _no_journal(dbapi: Any, _record: Any) -> None:
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-2097152"):
        dbapi.execute(f"PRAGMA {pragma}")


class BulkWriter:
    """Writes jobs' rows in big transactions on one connection: executemany on SQLite,
    COPY on PostgreSQL; the rollups through the gateway's own upsert (Rollups._store)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cursor = DriverCursor(conn)
        self.postgres = conn.dialect.name == "postgresql"
        self.rollups = Rollups(conn.engine, directory=None)  # type: ignore[arg-type]
        self.pending = 0
        self.conn.begin()

    def add(self, job: Job) -> None:
        """A job's entries, readings and rollups."""
        columns = "idx, leaf_hash, entry, device_id, seq, contract, received_at, minute"
        if self.postgres:
            raw: Any = self.cursor.cursor
            with raw.copy(f"COPY entries ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "bytea", "bytea", "text", "int8", "text", "text", "text"])
                for row in job.entries:
                    copy.write_row(row)
            with raw.copy(
                "COPY readings (idx, community_id, device_id, start) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "text", "text", "text"])
                for reading in job.readings:
                    copy.write_row(reading)
        else:
            self.cursor.executemany(
                f"INSERT INTO entries ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", job.entries
            )
            self.cursor.executemany(readings.INSERT, job.readings)
        communities = {device: COMMUNITY for device, _, _ in job.totals}
        through = job.first_index + len(job.entries) - 1
        # As Rollups.write: an hour split between two jobs extends the chain stored by the first.
        _, chains = self.rollups._chains(self.cursor, job.totals, communities)
        self.rollups._store(self.cursor, job.totals, communities, through, chains)
        self.pending += len(job.entries)

    def commit(self) -> None:
        """Commit what was added and begin again."""
        self.conn.commit()
        self.conn.begin()
        self.pending = 0

    def finish(self, levels: list[bytes], signer: NamedKey) -> None:
        """Every level's chunks (as Log.append and Log.seal store them) and a checkpoint
        over the whole tree, then commit."""
        step = CHUNK_SIZE * merkle.HASH_SIZE
        self.cursor.executemany(
            "INSERT INTO merkle_chunks (level, chunk, hashes) VALUES (?, ?, ?) "
            "ON CONFLICT (level, chunk) DO UPDATE SET hashes = excluded.hashes",
            [
                (level, chunk, data[offset : offset + step])
                for level, data in enumerate(levels)
                for chunk, offset in enumerate(range(0, len(data), step))
            ],
        )
        size = len(levels[0]) // merkle.HASH_SIZE
        root = merkle.tree_root(size, fetcher(levels))
        note = Checkpoint(origin=signer.name, tree_size=size, root_hash=root).sign(signer)
        self.cursor.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?)",
            (size, root, note, rfc3339_utc(datetime.now(UTC))),
        )
        self.conn.commit()
        if not self.postgres:  # back to the gateway's journal (ledger.storage)
            self.cursor.execute("PRAGMA journal_mode=WAL")


def levels_over(leaves: bytes) -> list[bytes]:
    """Every level of complete-subtree hashes above the concatenated leaf hashes (RFC 9162
    2.1.1), as the levels Log.seal stores: level L holds the roots of complete subtrees of
    2**L leaves."""
    sha, node = hashlib.sha256, merkle.NODE_PREFIX
    levels = [leaves]
    while len(levels[-1]) >= 2 * merkle.HASH_SIZE:
        below = memoryview(levels[-1])
        levels.append(
            b"".join(sha(node + below[i : i + 64]).digest() for i in range(0, len(below) - 63, 64))
        )
    return levels


def fetcher(levels: list[bytes]) -> merkle.NodeFetcher:
    """Node hashes from the in-memory levels."""

    def fetch(ids: Iterable[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        return {(lv, i): levels[lv][32 * i : 32 * i + 32] for lv, i in ids}

    return fetch


def proofs_verify(log: Log, first: int, count: int) -> int:
    """Inclusion proofs of dropped entries spread over the log from index `first` (after
    the registry entries), verified as `patio verify` does: returns how many verified (each
    must)."""
    size = log.size()
    verified = 0
    spread = (first + (size - first) * k // count for k in range(count))
    for index in sorted({first, size - 1, *spread}):
        stored = log.entry(index)
        assert stored.entry is None, f"entry {index} still has its payload"
        bundle = log.bundle(stored.log_tag_id, device_key=None).to_json()
        result = verify_bundle(bundle, log_key=log.signer.verifier_key)  # type: ignore[union-attr]
        assert not result.payload_checked
        verified += 1
    return verified


def vacuum(engine: Engine, sqlite: bool) -> float:
    """VACUUM (SQLite rewrites the file) or VACUUM FULL (PostgreSQL rewrites the tables)."""
    started = time.perf_counter()
    raw = engine.raw_connection()  # outside any transaction, which VACUUM refuses
    try:
        if not sqlite:
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
        raw.cursor().execute("VACUUM" if sqlite else "VACUUM FULL")
    finally:
        raw.close()
    return time.perf_counter() - started


def verify_cli(log: Log, index: int, work: Path) -> str:
    """`patio verify` of entry `index`'s proof bundle against the log's key: its output."""
    bundle = work / "bundle.json"
    bundle.write_bytes(
        orjson.dumps(log.bundle(log.entry(index).log_tag_id, device_key=None).to_json())
    )
    assert log.signer is not None
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "verify", str(bundle), "--log-key",
         log.signer.verifier_key],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise AssertionError(f"patio verify failed: {done.stdout}{done.stderr}")
    return done.stdout


def main() -> None:
    """Build, drop, measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--workers", type=int, default=2, help="signing processes")
    parser.add_argument("--dir", help="where the SQLite file goes (default: a temporary dir)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = None if args.database_url else Path(tmp) / "ledger.sqlite3"
        url = args.database_url or f"sqlite:///{path}"
        signer = NamedKey.generate("bench.example/log")
        log = Log.open(url=url, signer=signer)
        upgrade(log.engine)
        keys = [NamedKey.generate(f"bench-{d:03d}") for d in range(args.devices)]
        enrol(log, keys, NamedKey.generate("bench.example/registry"))
        log.engine.dispose()  # the bulk build writes alone
        sqlite = path is not None
        started, cpu = time.perf_counter(), time.process_time()
        count = build(
            url,
            keys,
            minutes=args.days * 1440,
            signer=signer,
            workers=args.workers,
            epoch=(int(time.time()) // 86400 - args.days - 1) * 86400,
        )
        built = time.perf_counter() - started
        before = size_bytes(log.engine, path)
        print(
            f"backend {'sqlite' if sqlite else 'postgresql'}: {args.devices} devices x "
            f"{args.days} days = {count:,} entries, built in {built:,.0f} s "
            f"({count / built:,.0f}/s; CPU: main process {time.process_time() - cpu:,.0f} s, "
            f"signing workers {resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime:,.0f} s), "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"size before: {before / 2**20:,.1f} MiB ({before / count:,.0f} B/entry)")
        retention.set_policy(log.engine, COMMUNITY, 1)
        started = time.perf_counter()
        dropped = retention.apply(log)[COMMUNITY]
        took = time.perf_counter() - started
        after = size_bytes(log.engine, path)
        print(
            f"dropped {dropped:,} payloads in {took:,.1f} s ({dropped / took:,.0f}/s), "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"size after dropping: {after / 2**20:,.1f} MiB ({after / count:,.0f} B/entry)")
        first = 1 + args.devices  # after the registry entries
        print(f"inclusion proofs of {proofs_verify(log, first, 20)} dropped entries verified")
        output = verify_cli(log, first, Path(tmp)).strip().splitlines()[-1]
        print(f"patio verify of entry {first}: {output}")
        took = vacuum(log.engine, sqlite)
        vacuumed = size_bytes(log.engine, path)
        print(
            f"size after {'VACUUM' if sqlite else 'VACUUM FULL'} ({took:,.1f} s): "
            f"{vacuumed / 2**20:,.1f} MiB ({vacuumed / count:,.0f} B/entry)"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        log.engine.dispose()


if __name__ == "__main__":
    main()
