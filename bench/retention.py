"""Retention benchmark: time and database size before and after dropping every payload of
`--devices` devices over `--days` days (docs/retention.md), SQLite and PostgreSQL.

Run: .venv/bin/python -m bench.retention [--devices 50] [--days 3] [--database-url URL]
Builds the log with Log.append (received `--days` + 1 days ago, so a 1-day policy drops it
all), registers the devices in the gateway's tables, then times gateway.retention.apply,
the same code as the periodic task and `patio retention apply`. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from bench.ledger import minute
from gateway import retention
from gateway.store import communities, devices, upgrade
from ledger.encoding import canonical_json, rfc3339_utc
from ledger.keys import NamedKey
from ledger.log import Log, Submission

BATCH = 2_000  # entries per append, the writer's largest commit
COMMUNITY = "bench-hoa"


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


def build(log: Log, *, device_count: int, days: int) -> int:
    """Append `days` of minutes for each device, received long enough ago to be dropped."""
    keys = [NamedKey.generate(f"bench-{d:03d}") for d in range(device_count)]
    received = datetime.now(UTC) - timedelta(days=days + 1)
    with log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
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
    pending: list[Submission] = []
    total = 0
    for seq in range(days * 1440):
        for key in keys:
            payload = minute(key.name, seq)
            jcs = canonical_json(payload)
            pending.append(
                Submission(
                    contract="energy_minute@1",
                    payload=payload,
                    sig=key.sign_payload(payload),
                    device_id=key.name,
                    seq=seq,
                    minute=str(payload["start"]),
                    payload_jcs=jcs,
                )
            )
            if len(pending) == BATCH:
                log.append(pending, now=received)
                total += len(pending)
                pending = []
    if pending:
        log.append(pending, now=received)
        total += len(pending)
    log.seal()
    return total


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = None if args.database_url else Path(tmp) / "ledger.sqlite3"
        url = args.database_url or f"sqlite:///{path}"
        log = Log.open(url=url, signer=NamedKey.generate("bench.example/log"))
        upgrade(log.engine)
        sqlite = path is not None
        started = time.perf_counter()
        count = build(log, device_count=args.devices, days=args.days)
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
        took = vacuum(log.engine, sqlite)
        vacuumed = size_bytes(log.engine, path)
        print(
            f"size after {'VACUUM' if sqlite else 'VACUUM FULL'} ({took:.1f} s): "
            f"{vacuumed / 2**20:,.1f} MiB ({vacuumed / count:,.0f} B/entry)"
        )
        log.engine.dispose()


if __name__ == "__main__":
    main()
