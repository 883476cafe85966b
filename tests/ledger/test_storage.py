"""SQLite WAL handling: a writer that leaves checkpoints to another connection."""

from __future__ import annotations

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
