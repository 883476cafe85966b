"""SQLite durability: what the gateway acknowledged is in the database file and its WAL when
both processes are killed, with no checkpoint in between."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ledger.storage import open_engine
from tests.gateway.server import start_gateway
from tests.gateway.test_api import envelope, minute, submit
from tests.wait import process_gone, wait_until

# Run in a process of its own: it sees only what is on disk, nothing a killed process held.
READ_LOG = """
import json, sqlite3, sys
from ledger.bundle import log_tag_id
db = sqlite3.connect(sys.argv[1])
print(json.dumps([log_tag_id(bytes(row[0])) for row in db.execute(
    "SELECT leaf_hash FROM entries WHERE contract LIKE 'energy_minute%' ORDER BY idx")]))
"""


def read_afresh(database: Path) -> list[str]:
    """The energy_minute log tag ids in a SQLite file (and its WAL), read by a new process."""
    done = subprocess.run(
        [sys.executable, "-c", READ_LOG, str(database)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    tags: list[str] = json.loads(done.stdout)
    return tags


def test_acknowledged_commits_survive_kill_9_without_a_checkpoint(tmp_path: Path) -> None:
    server = start_gateway(tmp_path)  # SQLite in the data dir; it seals (and checkpoints) hourly
    try:
        keys = [server.device(f"meter-{i}", "hoa-1") for i in range(8)]

        def load(i: int) -> list[str]:
            key = keys[i % 8]
            seqs = range(i * 5 + 1, i * 5 + 6)
            results = submit(server, *(envelope(key, minute(key.name, s)) for s in seqs))
            assert {r["status"] for r in results} == {"accepted"}, results
            return [r["log_tag_id"] for r in results]

        with ThreadPoolExecutor(8) as pool:
            acknowledged = [tag for tags in pool.map(load, range(40)) for tag in tags]
        writer = server.writer_pid()
        for pid in (server.process.pid, writer):  # no stop, no last checkpoint
            os.kill(pid, signal.SIGKILL)
        server.process.wait(10)
        wait_until(lambda: process_gone(writer), 10, "the writer to die")
    finally:
        server.admin.close()
    database = tmp_path / "ledger.sqlite3"
    wal = tmp_path / "ledger.sqlite3-wal"
    assert wal.stat().st_size > 0
    # The database file alone lacks them: they are in the WAL, nothing checkpointed them.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(database, alone / database.name)
    assert not set(acknowledged) & set(read_afresh(alone / database.name))
    assert sorted(read_afresh(database)) == sorted(acknowledged)


def test_the_writers_connection_syncs_every_commit(tmp_path: Path) -> None:
    # In WAL mode synchronous=NORMAL survives a process kill but not a power cut: FULL
    # fsyncs the WAL at each commit, before the writer answers.
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", autocheckpoint=False)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
    engine.dispose()
