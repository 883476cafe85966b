"""SQLite WAL handling: a writer that leaves checkpoints to another connection."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from ledger.storage import checkpoint_wal, open_engine


def test_a_writer_without_autocheckpoint_leaves_the_wal_to_checkpoint_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_engine(url).dispose()  # migrated, as the gateway does before starting its writer
    writer = open_engine(url, migrate=False, autocheckpoint=False)
    with writer.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
        conn.exec_driver_sql("CREATE TABLE filler (x BLOB)")
        for _ in range(1_500):  # well past the default 1,000-page mark
            conn.execute(text("INSERT INTO filler VALUES (randomblob(4000))"))
            conn.commit()
    wal = tmp_path / "ledger.db-wal"
    assert wal.stat().st_size > 1_000 * 4096, "no commit should have checkpointed"
    other = open_engine(url, migrate=False)
    checkpoint_wal(other)
    with other.connect() as conn:
        busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert busy == 0 and frames == done  # everything in the WAL is in the database file
    writer.dispose()
    other.dispose()


def _wal_under_sustained_load(tmp_path: Path, restart_bytes: int) -> tuple[int, int]:
    """(largest WAL file seen, bytes committed) while a writer commits 16 MB of rows, two
    readers keep overlapping snapshots open, and checkpoint_wal runs between commits."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_engine(url).dispose()
    writer = open_engine(url, migrate=False, autocheckpoint=False)
    readers = open_engine(url, migrate=False)
    sealer = open_engine(url, migrate=False)
    with writer.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE filler (x BLOB)")
        conn.commit()
    done = threading.Event()

    def read() -> None:  # always some snapshot open: the two threads' reads overlap
        while not done.is_set():
            with readers.connect() as conn:
                conn.exec_driver_sql("SELECT count(*) FROM filler").one()
                time.sleep(0.002)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    wal, largest, row = tmp_path / "ledger.db-wal", 0, 8_000
    try:
        with writer.connect() as conn:
            for n in range(2_000):
                conn.execute(text("INSERT INTO filler VALUES (randomblob(:n))"), {"n": row})
                conn.commit()
                if n % 20 == 0:
                    checkpoint_wal(sealer, restart_bytes=restart_bytes)
                largest = max(largest, wal.stat().st_size)
    finally:
        done.set()
        for thread in threads:
            thread.join()
        for engine in (writer, readers, sealer):
            engine.dispose()
    return largest, 2_000 * row


def test_the_wal_starts_over_under_sustained_reads_and_writes(tmp_path: Path) -> None:
    # Readers always holding a snapshot starve PASSIVE checkpoints: the WAL never restarts.
    largest, written = _wal_under_sustained_load(tmp_path, restart_bytes=256 * 1024)
    assert largest < written / 4, f"the WAL grew to {largest} bytes of {written} written"
