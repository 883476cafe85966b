"""Retention benchmark: time and database size before and after dropping every payload of
`--devices` devices over `--days` days (docs/retention.md), SQLite and PostgreSQL.

Run: .venv/bin/python -m bench.retention [--devices 50] [--days 3] [--database-url URL]
       [--workers 2]
Builds the log in bulk: one energy_minute a minute per device (8 readings, signed by the
device's key), the entry bytes and leaf hashes as Log.append makes them (`entry_bytes`,
`merkle.leaf_hash`), received a minute after their minute and `--days` + 1 days ago at the
oldest, so a 1-day policy drops them all. `--workers` processes sign; the main process writes
rows (executemany on SQLite, COPY on PostgreSQL) and the leaf level, and Log.seal signs a
checkpoint every million entries, so the tree and its checkpoints are the log's own. Then it
times gateway.retention.apply (the code of the periodic task and of `patio retention
apply`), checks that inclusion proofs of dropped entries still verify, and VACUUMs. Prints
one line per figure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, text

from gateway import retention
from gateway.store import communities, devices, upgrade
from ledger import merkle
from ledger.encoding import b64encode, canonical_json, rfc3339_utc
from ledger.keys import NamedKey
from ledger.log import Log, entry_bytes
from ledger.storage import DriverCursor
from ledger.verify import verify_bundle

COMMUNITY = "bench-hoa"
CONTRACT = "energy_minute@1"
SEAL_EVERY = 1_000_000  # entries between checkpoints while building


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


def _day(args: tuple[int, int, str]) -> tuple[list[tuple[object, ...]], list[bytes]]:
    """One device's day of entries (worker process): rows without their index, leaf hashes."""
    day, first_minute, seed = args
    key = NamedKey.from_text(seed)
    rows, leaves = [], []
    for n in range(day * 1440, (day + 1) * 1440):
        start = first_minute + 60 * n
        payload = minute_payload(key.name, n, start)
        # The payload holds plain values only (ASCII, integral numbers as ints), for which
        # canonical_json is exactly this orjson call (ledger/encoding.py); checked once a job.
        jcs = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        if n == day * 1440 and jcs != canonical_json(payload):
            raise AssertionError("the bench payload is not plain JCS")
        received = rfc3339_utc(datetime.fromtimestamp(start + 60, UTC))
        sig = b64encode(key.sign(jcs))
        data = entry_bytes(contract=CONTRACT, payload_jcs=jcs, sig=sig, received_at=received)
        leaf = merkle.leaf_hash(data)
        rows.append((leaf, data, key.name, n, CONTRACT, received, payload["start"]))
        leaves.append(leaf)
    return rows, leaves


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


def build(log: Log, *, device_count: int, days: int, workers: int) -> int:
    """Append `days` of minutes for each device, day by day, oldest first."""
    with log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        keys = register(conn, device_count)
    first_minute = (int(time.time()) // 86400 - days - 1) * 86400
    jobs = [
        (day, first_minute, keys[d].to_text()) for day in range(days) for d in range(device_count)
    ]
    index = log.size()
    sealed_at = index
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        started = time.perf_counter()
        for rows, leaves in pool.imap(_day, jobs, chunksize=1):
            _store(log, index, rows, leaves)
            index += len(rows)
            if index - sealed_at >= SEAL_EVERY:
                log.seal()
                sealed_at = index
                took = time.perf_counter() - started
                print(
                    f"  {index:,} entries in {took:,.0f} s ({index / took:,.0f}/s), "
                    f"load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    log.seal()
    return index


def _store(log: Log, first: int, rows: list[tuple[object, ...]], leaves: list[bytes]) -> None:
    """Rows from index `first` and their leaf level, in one transaction."""
    numbered = [(first + i, *row) for i, row in enumerate(rows)]
    columns = "idx, leaf_hash, entry, device_id, seq, contract, received_at, minute"
    with log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        cursor = DriverCursor(conn)
        if conn.dialect.name == "postgresql":
            raw: Any = cursor.cursor
            with raw.copy(f"COPY entries ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "bytea", "bytea", "text", "int8", "text", "text", "text"])
                for row in numbered:
                    copy.write_row(row)
        else:
            cursor.executemany(
                f"INSERT INTO entries ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", numbered
            )
        log._store_level(cursor, 0, first, leaves)  # as Log.append stores it


def proofs_verify(log: Log, count: int) -> int:
    """Inclusion proofs of dropped entries spread over the log, verified as `patio verify`
    does: returns how many verified (each must)."""
    size = log.size()
    verified = 0
    for index in sorted({0, size - 1, *(size * k // count for k in range(count))}):
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
        log = Log.open(url=url, signer=NamedKey.generate("bench.example/log"))
        upgrade(log.engine)
        sqlite = path is not None
        started = time.perf_counter()
        count = build(log, device_count=args.devices, days=args.days, workers=args.workers)
        built = time.perf_counter() - started
        before = size_bytes(log.engine, path)
        print(f"backend {'sqlite' if sqlite else 'postgresql'}: {args.devices} devices x "
              f"{args.days} days = {count:,} entries, built in {built:.1f} s")  # fmt: skip
        print(f"size before: {before / 2**20:,.1f} MiB ({before / count:,.0f} B/entry)")
        retention.set_policy(log.engine, COMMUNITY, 1)
        started = time.perf_counter()
        dropped = retention.apply(log)[COMMUNITY]
        took = time.perf_counter() - started
        after = size_bytes(log.engine, path)
        print(f"dropped {dropped:,} payloads in {took:.1f} s ({dropped / took:,.0f}/s)")
        print(f"size after dropping: {after / 2**20:,.1f} MiB ({after / count:,.0f} B/entry)")
        print(f"inclusion proofs of {proofs_verify(log, 20)} dropped entries verified")
        took = vacuum(log.engine, sqlite)
        vacuumed = size_bytes(log.engine, path)
        print(
            f"size after {'VACUUM' if sqlite else 'VACUUM FULL'} ({took:.1f} s): "
            f"{vacuumed / 2**20:,.1f} MiB ({vacuumed / count:,.0f} B/entry)"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        log.engine.dispose()


if __name__ == "__main__":
    main()
