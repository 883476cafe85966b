"""`kill -9` of a real `patio edge run` process: nothing lost, nothing duplicated, no seq reused."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.edge.conftest import DEVICE
from tests.edge.fakes import REPO, FakeGateway
from tests.wait import wait_until

PATIO = REPO / ".venv" / "bin" / "patio"


@pytest.fixture
def spawn(
    write_config: Callable[..., Path], gateway: FakeGateway, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `patio edge run` on simulated time (2 minutes a second) against the fake gateway."""
    config = write_config(
        agent={"grace_s": 1.0, "time_scale": 120.0, "sim_start": "2026-11-22T10:00:00Z"},
        delivery={
            "url": gateway.url,
            "batch_size": 50,
            "backoff_base_s": 1.0,
            "backoff_max_s": 10.0,
        },
        sensors=[
            {"driver": "simulator", "name": "house", "kind": "household", "interval_s": 5.0},
            {"driver": "simulator", "name": "boiler", "kind": "boiler", "interval_s": 5.0},
        ],
    )
    children: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "agent.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [str(PATIO), "edge", "run", "--config", str(config), "--log-level", "WARNING"],
            stdout=log,
            stderr=log,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()
    log.close()


def database(tmp_path: Path) -> sqlite3.Connection:
    """A reader on the agent's database (WAL: it does not block the agent)."""
    return sqlite3.connect(tmp_path / "var" / "edge.db", timeout=10)


def outbox_counts(tmp_path: Path) -> tuple[int, int]:
    """(all outbox rows, rows still pending)."""
    if not (tmp_path / "var" / "edge.db").exists():
        return 0, 0
    with database(tmp_path) as db:
        try:
            total, waiting = db.execute(
                "SELECT count(*), count(*) - count(acked_ms) FROM outbox"
            ).fetchone()
        except sqlite3.OperationalError:  # schema not created yet
            return 0, 0
    return int(total), int(waiting)


def kill_9(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no handler, no cleanup, no flush."""
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)


def stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and expect a clean exit."""
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == 0


def assert_exactly_once(gateway: FakeGateway, tmp_path: Path) -> int:
    """Every stored minute is in the ledger once, under one seq that was never reused."""
    payloads = gateway.payloads(DEVICE)
    seqs = sorted(p["seq"] for p in payloads)
    starts = [p["start"] for p in payloads]
    assert seqs == list(range(1, len(seqs) + 1)), "a seq was lost or skipped"
    assert len(set(starts)) == len(starts), "a minute was recorded twice"
    assert gateway.conflicts == [], "a seq was reused with other bytes"
    with database(tmp_path) as db:
        rows = db.execute("SELECT seq, body, acked_ms FROM outbox ORDER BY seq").fetchall()
        next_seq = int(db.execute("SELECT value FROM state WHERE key = 'next_seq'").fetchone()[0])
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert [seq for seq, _, _ in rows] == seqs and next_seq == len(seqs) + 1 and dead == 0
    for seq, body, acked in rows:
        assert acked is not None and gateway.entries[(DEVICE, seq)] == bytes(body)
    return len(seqs)


def test_kill_9_during_a_flush_then_restart(
    spawn: Callable[[], subprocess.Popen[bytes]], gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.hold = True  # the gateway commits the first batch, then holds the answer
    child = spawn()
    assert gateway.held.wait(30), "the agent never flushed"
    kill_9(child)  # committed in the ledger, never acknowledged to the device
    unanswered = sorted(seq for _, seq in gateway.entries)
    assert unanswered and outbox_counts(tmp_path)[1] >= len(unanswered)
    gateway.hold = False
    gateway.release.set()

    child = spawn()
    wait_until(
        lambda: (
            outbox_counts(tmp_path)[0] >= len(unanswered) + 4 and outbox_counts(tmp_path)[1] == 0
        ),
        30,
        "the restarted agent to catch up",
    )
    stop(child)
    assert assert_exactly_once(gateway, tmp_path) >= len(unanswered) + 4
    with database(tmp_path) as db:
        statuses = dict(db.execute("SELECT seq, ack_status FROM outbox").fetchall())
    # The batch the gateway had committed came back as duplicates: same log tag, no new entry.
    assert {statuses[seq] for seq in unanswered} == {"duplicate"}


def kill_after(
    spawn: Callable[[], subprocess.Popen[bytes]], work: Callable[[], int], more: int, what: str
) -> None:
    """Start an agent and kill -9 it once `work()` has grown by `more`."""
    done = work() + more
    child = spawn()
    wait_until(lambda: work() >= done, 30, f"{more} more {what}")
    kill_9(child)


def test_repeated_kill_9_at_random_moments(
    spawn: Callable[[], subprocess.Popen[bytes]], gateway: FakeGateway, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    for _ in range(5):
        # Killed after a random amount of work, counted rather than timed (a loaded machine
        # would otherwise kill it while it imports): some new minutes in its outbox, or
        # some requests to the gateway, whose answers may be on their way.
        if rng.random() < 0.5:
            kill_after(spawn, lambda: outbox_counts(tmp_path)[0], rng.randint(1, 3), "minutes")
        else:
            kill_after(spawn, lambda: len(gateway.requests), rng.randint(1, 3), "deliveries")
    delivered_before = len(gateway.entries)
    child = spawn()
    wait_until(
        lambda: (
            outbox_counts(tmp_path)[0] >= max(delivered_before, 1) + 3
            and outbox_counts(tmp_path)[1] == 0
        ),
        30,
        "the last agent to catch up",
    )
    stop(child)
    count = assert_exactly_once(gateway, tmp_path)
    assert count >= 4
    # The simulated timeline continued across restarts (anchored in the database).
    minutes = sorted(
        json.loads(gateway.entries[(DEVICE, s)])["payload"]["start"] for s in range(1, count + 1)
    )
    # (The first minute is 10:00 only if the first agent sampled within 0.5 s of starting,
    # at 120 simulated seconds a second: a loaded machine takes longer.)
    assert len(set(minutes)) == len(minutes)
    assert "2026-11-22T10:00:00Z" <= minutes[0] < "2026-11-22T10:05:00Z" < minutes[-1]
