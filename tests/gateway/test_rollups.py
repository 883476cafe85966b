"""Rollups follow the log: through a real gateway, late minutes, resends, restarts, rebuild."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from contracts.energy.hourly import HourlyRollup
from contracts.energy.minute import CONTRACT, rollups
from gateway.directory import Directory
from gateway.rollups import Rollups, rollups_for, rollups_for_device
from gateway.store import upgrade
from ledger.keys import NamedKey
from ledger.log import Log, Submission
from ledger.storage import database_url as database_url_for
from ledger.storage import open_engine
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.docs import fenced
from tests.gateway.server import Gateway, patio, start_gateway

FIRST_HOUR = datetime(2026, 11, 20, 6, tzinfo=UTC)
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
COMMUNITIES = {"north-1": "hoa-north", "north-2": "hoa-north", "south-1": "hoa-south"}


@dataclass
class Place:
    """Where a gateway keeps its data: a directory, and a PostgreSQL schema or not."""

    data_dir: Path
    database_url: str | None

    def engine(self) -> Engine:
        """An engine on the gateway's database (already migrated by the gateway)."""
        return open_engine(database_url_for(self.database_url, self.data_dir), migrate=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """A fresh SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield Place(tmp_path, None)
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield Place(tmp_path, f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def reading(rng: random.Random, minute: int) -> dict[str, Any]:
    """Readings of one minute: PV power, a meter, a temperature, a switch; some missing."""
    values: dict[str, Any] = {}
    if rng.random() > 0.1:  # the power sensor misses some minutes altogether
        avg = None if rng.random() < 0.1 else round(rng.uniform(-50, 4000), rng.randint(0, 4))
        n = 0 if avg is None else 12
        values["pv_w"] = {"unit": "W", "n": n, "missing": 12 - n, "avg": avg, "min": avg,
                          "max": avg}  # fmt: skip
    n = rng.choice([12, 12, 12, 0])
    values["meter_wh"] = {"unit": "Wh", "sum": round(rng.uniform(0, 70), 4) if n else 0,
                          "n": n, "missing": 12 - n}  # fmt: skip
    values["water"] = {"unit": "Cel", "n": 12, "missing": 0, "avg": 40 + minute % 7,
                       "min": 40.0, "max": 47.0}  # fmt: skip
    values["pump"] = {"unit": "bool", "any": True, "on_fraction": 0.5}
    return values


@dataclass
class Fleet:
    """Devices and the minutes they have measured, signed on demand."""

    rng: random.Random
    keys: dict[str, NamedKey] = field(default_factory=dict)
    next_minute: dict[str, int] = field(default_factory=dict)

    def envelope(self, device_id: str, minute: int) -> dict[str, Any]:
        """The device's aggregate of a minute (seq = the minute: late minutes keep theirs)."""
        start = FIRST_HOUR + timedelta(minutes=minute)
        payload = {
            "device_id": device_id,
            "seq": minute + 1,
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "period_s": 60,
            "readings": reading(self.rng, minute),
        }
        return {"payload": payload, "sig": self.keys[device_id].sign_payload(payload)}

    def minutes(self, count: int) -> list[dict[str, Any]]:
        """The next `count` minutes of every device, shuffled: late minutes arrive last."""
        out = []
        for device_id in self.keys:
            first = self.next_minute.get(device_id, 0)
            # Gaps: some minutes are never measured at all.
            taken = [m for m in range(first, first + count) if self.rng.random() > 0.05]
            out += [self.envelope(device_id, m) for m in taken]
            self.next_minute[device_id] = first + count
        self.rng.shuffle(out)
        return out


def submit(server: Gateway, envelopes: list[dict[str, Any]], rng: random.Random) -> list[str]:
    """POST in random batch sizes (some over 100, which go to the writer in chunks)."""
    statuses = []
    with server.client() as client:
        while envelopes:
            size = rng.choice([1, 7, 40, 150])
            batch, envelopes = envelopes[:size], envelopes[size:]
            reply = client.post(
                "/v1/entries", json={"contract": "energy_minute", "envelopes": batch}
            )
            assert reply.status_code in (200, 201, 207, 409), reply.text
            statuses += [result["status"] for result in reply.json()["results"]]
    return statuses


def append_directly(place: Place, envelopes: list[dict[str, Any]]) -> None:
    """Append without the gateway (no rollup hook), as `patio log append` does."""
    engine = place.engine()
    try:
        Log(engine=engine, signer=None, origin="test").append(
            [
                Submission(
                    contract=CONTRACT,
                    payload=e["payload"],
                    sig=e["sig"],
                    device_id=e["payload"]["device_id"],
                    seq=e["payload"]["seq"],
                )
                for e in envelopes
            ]
        )
    finally:
        engine.dispose()


def recomputed(place: Place) -> list[HourlyRollup]:
    """From scratch: the pure fold over every logged energy_minute entry of our devices."""
    engine = place.engine()
    try:
        log = Log(engine=engine, signer=None, origin="test")
        logged, start = [], 0
        while chunk := log.entries(start=start, limit=1000):
            for entry in chunk:
                if entry.contract == CONTRACT and entry.device_id in COMMUNITIES:
                    payload = entry.entry_object()["payload"]
                    tag = entry.log_tag_id.encode()
                    logged.append((entry.index, entry.device_id, payload, tag))
            start = chunk[-1].index + 1
    finally:
        engine.dispose()
    return rollups(logged)


def stored(place: Place) -> list[HourlyRollup]:
    """What the gateway keeps, through the read API, by community."""
    engine = place.engine()
    try:
        found = []
        for community in sorted(set(COMMUNITIES.values())):
            found += rollups_for(engine, community, *EVER)
        for rollup in found:
            assert rollup.device_id in COMMUNITIES, rollup
        by_device = [r for d in COMMUNITIES for r in rollups_for_device(engine, d, *EVER)]
    finally:
        engine.dispose()
    key = lambda r: (r.device_id, r.sensor, r.hour)  # noqa: E731
    assert sorted(by_device, key=key) == sorted(found, key=key)
    return sorted(found, key=key)


def raw_rows(place: Place) -> list[tuple[Any, ...]]:
    """Every column of every rollup row, the progress mark and the day markers, after
    checking each UTC day's marker is the highest last_idx of its rollups."""
    engine = place.engine()
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM rollups ORDER BY device_id, hour, sensor"))
            through = conn.execute(text("SELECT through_idx FROM rollup_progress")).all()
            days = conn.execute(text("SELECT * FROM rollup_days ORDER BY community_id, day")).all()
            expected = conn.execute(
                text("SELECT community_id, hour / 86400, max(last_idx) FROM rollups "
                     "GROUP BY community_id, hour / 86400 ORDER BY 1, 2")
            ).all()  # fmt: skip
            assert [tuple(d) for d in days] == [tuple(e) for e in expected]
            return [tuple(row) for row in rows] + [tuple(r) for r in through + days]
    finally:
        engine.dispose()


def test_rollups_equal_a_recomputation(place: Place) -> None:
    rng = random.Random(2026)
    fleet = Fleet(rng)
    server = start_gateway(place.data_dir, database_url=place.database_url)
    try:
        for device_id, community in COMMUNITIES.items():
            fleet.keys[device_id] = server.device(device_id, community)
        # Random batches, late minutes shuffled among current ones.
        first = fleet.minutes(70)
        statuses = submit(server, list(first), rng)
        assert set(statuses) == {"accepted"}
        assert stored(place) == recomputed(place)
        assert all(r.minutes <= 60 for r in stored(place))

        # Resends count once; a conflicting resend (same seq, other bytes) never counts.
        before = stored(place)
        resent = rng.sample(first, 30)
        conflicting = [fleet.envelope(e["payload"]["device_id"], e["payload"]["seq"] - 1)
                       for e in rng.sample(first, 10)]  # fmt: skip
        conflicting = [e for e in conflicting if e["payload"] not in [f["payload"] for f in first]]
        statuses = submit(server, resent + conflicting, rng)
        assert statuses.count("duplicate") == 30
        assert statuses.count("rejected") == len(conflicting) > 0
        assert stored(place) == before == recomputed(place)
        raw_rows(place)  # the day markers follow the rollups

        # Entries appended beside the gateway leave a gap the next commit fills.
        append_directly(place, fleet.minutes(20))
        submit(server, fleet.minutes(15), rng)
        assert stored(place) == recomputed(place)
    finally:
        server.stop()

    # Stopped: more minutes, late ones into hours already rolled up, an unregistered device.
    outage = fleet.minutes(45)
    ghost = NamedKey.generate("ghost")
    fleet.keys["ghost"] = ghost
    outage += [fleet.envelope("ghost", m) for m in range(5)]
    del fleet.keys["ghost"]
    append_directly(place, outage)
    assert stored(place) != recomputed(place)
    server = start_gateway(place.data_dir, database_url=place.database_url)  # catches up
    try:
        caught_up = stored(place)
        assert caught_up == recomputed(place)
        assert {r.hour for r in caught_up} >= {FIRST_HOUR + timedelta(hours=h) for h in range(3)}
        # Missing minutes are counted, never filled with zero: some hours lack minutes.
        assert any(r.minutes < 60 for r in caught_up if r.hour < FIRST_HOUR + timedelta(hours=2))
        rows = raw_rows(place)

        # `patio reports rebuild` recomputes the same rows while the gateway runs, and
        # forgets every report's kept unit sums.
        engine = place.engine()
        try:
            with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
                conn.execute(text("INSERT INTO report_units VALUES ('c', 'sha', '[]', '[]')"))
        finally:
            engine.dispose()
        result = patio("reports", "rebuild", env=server.env)
        assert result.stdout.startswith(f"rebuilt {len(caught_up)} hourly rollups from "), result
        assert raw_rows(place) == rows
        engine = place.engine()
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM report_units")).scalar_one() == 0
        finally:
            engine.dispose()
        submit(server, fleet.minutes(10), rng)
        assert stored(place) == recomputed(place)
        raw_rows(place)
    finally:
        server.stop()


def test_peak_and_late_minute_in_sql(place: Place) -> None:
    """Hand-computed: the upsert adds a late minute to its hour, the higher peak wins, and
    of equal peaks the earlier minute, whatever order they come in."""
    engine = open_engine(database_url_for(place.database_url, place.data_dir))
    try:
        upgrade(engine)
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(
                text("INSERT INTO communities (id, name, created_at) VALUES ('hoa', 'hoa', 'x')")
            )
            key = NamedKey.generate("d1").public_key_b64
            conn.execute(
                text(
                    "INSERT INTO devices (id, community_id, public_key, revoked_at, created_at) "
                    f"VALUES ('d1', 'hoa', '{key}', NULL, 'x')"
                )
            )

        log = Log(engine=engine, signer=None, origin="test")
        hook = Rollups(engine, Directory(engine, registry_key="")).write

        def minute(seq: int, start: str, watts: float) -> Submission:
            power = {"unit": "W", "n": 1, "missing": 0, "avg": watts}
            payload = {"device_id": "d1", "seq": seq, "start": start, "period_s": 60,
                       "readings": {"p": power}}  # fmt: skip
            return Submission(contract=CONTRACT, payload=payload, sig="s", device_id="d1", seq=seq)

        log.append([minute(3, "2026-11-20T06:30:00Z", 120.0)], within=hook)
        log.append([minute(4, "2026-11-20T06:40:00Z", 60.0)], within=hook)
        log.append([minute(1, "2026-11-20T06:10:00Z", 120.0)], within=hook)  # late, equal peak
        log.append([minute(2, "2026-11-20T06:20:00Z", 30.0)], within=hook)  # late
        [hour] = rollups_for(engine, "hoa", *EVER)
        tags = [entry.log_tag_id.encode() for entry in log.entries(start=0, limit=10)]
        # A row whose chain is unknown (g0010 over dropped payloads) stays unknown. A
        # migration runs before the writer starts: a new one, which has kept no chains.
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(text("UPDATE rollups SET chain = NULL"))
        hook = Rollups(engine, Directory(engine, registry_key="")).write
        log.append([minute(5, "2026-11-20T06:50:00Z", 60.0)], within=hook)
        [unknown] = rollups_for(engine, "hoa", *EVER)
    finally:
        engine.dispose()
    # 120 + 60 + 120 + 30 W for a minute each: (2000 + 1000 + 2000 + 500) mWh.
    assert (hour.minutes, hour.energy_mwh, hour.peak_mw) == (4, 5500, 120_000)
    assert hour.peak_minute == datetime(2026, 11, 20, 6, 10, tzinfo=UTC)
    assert (hour.first_idx, hour.last_idx) == (0, 3)
    # The chain follows the log's order (seq 3, 4, 1, 2), not the minutes'.
    chain = b""
    for tag in tags:
        chain = hashlib.sha256(chain + tag).digest()
    assert (hour.entries, hour.chain) == (4, chain)
    assert (unknown.entries, unknown.chain) == (5, None)


def test_chains_across_writers_and_failed_commits(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer trusts the chains it stored only while the log is as its own last committed
    append left it: not after another writer appended, a rollback or a failed COMMIT (each
    followed by the other writer appending as many entries, so the log's size alone would
    match what the lost append would have left)."""
    url = database_url_for(place.database_url, place.data_dir)
    engines = [open_engine(url), open_engine(url, migrate=False)]
    try:
        upgrade(engines[0])
        with engines[0].connect().execution_options(patio_write=True) as conn, conn.begin():
            for community in sorted(set(COMMUNITIES.values())):
                conn.execute(
                    text("INSERT INTO communities (id, name, created_at) VALUES (:c, :c, 'x')"),
                    {"c": community},
                )
            for device_id, community in COMMUNITIES.items():
                conn.execute(
                    text(
                        "INSERT INTO devices (id, community_id, public_key, revoked_at, "
                        "created_at) VALUES (:d, :c, :k, NULL, 'x')"
                    ),
                    {"d": device_id, "c": community, "k": NamedKey.generate("k").public_key_b64},
                )
        logs = [Log(engine=engine, signer=None, origin="test") for engine in engines]
        writers = [Rollups(engine, Directory(engine, registry_key="")) for engine in engines]
        reads: list[list[Any]] = []  # the keys of each read of writer 0's stored chains
        chains = writers[0]._chains

        def read(cursor: Any, keys: Any, communities: Any) -> Any:
            reads.append(list(keys))
            return chains(cursor, reads[-1], communities)

        monkeypatch.setattr(writers[0], "_chains", read)
        # Hours 06 and 07: the even minutes first, then the odd ones (late minutes).
        minutes = iter([*range(0, 120, 2), *range(1, 120, 2)])
        seqs = iter(range(1, 10_000))

        def batch(count: int, devices: Iterable[str] = tuple(COMMUNITIES)) -> list[Submission]:
            """The next `count` minutes of `devices` (every device's by default)."""
            out = []
            for minute in itertools.islice(minutes, count):
                start = (FIRST_HOUR + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
                for device_id in devices:
                    seq = next(seqs)
                    power = {"unit": "W", "n": 1, "missing": 0, "avg": float(seq % 997)}
                    payload = {"device_id": device_id, "seq": seq, "start": start,
                               "period_s": 60, "readings": {"p": power}}  # fmt: skip
                    out.append(Submission(contract=CONTRACT, payload=payload, sig="s",
                                          device_id=device_id, seq=seq))  # fmt: skip
            return out

        def append(writer: int, count: int, devices: Iterable[str] = tuple(COMMUNITIES)) -> None:
            logs[writer].append(batch(count, devices), within=writers[writer].write)

        def lost(why: str) -> None:
            """Writer 0 appends 3 minutes that never commit, then writer 1 appends 3."""
            read = len(reads)
            with pytest.raises(RuntimeError, match=why):
                if why == "rolled back":

                    def fail(conn: Any, submissions: Any, outcomes: Any) -> None:
                        writers[0].write(conn, submissions, outcomes)
                        raise RuntimeError(why)

                    logs[0].append(batch(3), within=fail)
                else:
                    dialect = engines[0].dialect

                    def commit(dbapi_connection: Any) -> None:
                        dbapi_connection.rollback()
                        raise RuntimeError(why)

                    with monkeypatch.context() as patched:
                        patched.setattr(dialect, "do_commit", commit)
                        logs[0].append(batch(3), within=writers[0].write)
            assert len(reads) == read  # the lost append trusted what writer 0 kept
            append(1, 3)  # the log is now as long as the lost append would have left it
            append(0, 2)
            assert len(reads) == read + 1  # not trusted: read again

        append(0, 3)
        append(0, 3)
        assert len(reads) == 1  # the second append read nothing: its chains were kept
        append(1, 3)
        append(0, 3)
        assert len(reads) == 2  # writer 1 appended in between
        # Writer 0 keeps P's chains, writer 1 extends them, writer 0 appends for Q alone (it
        # reads Q's chains: the log moved) and then for P: what it kept of P went stale
        # meanwhile, though the log is now as its last append left it.
        p, q = sorted(COMMUNITIES)[:2]
        append(0, 3, [p])
        append(1, 3, [p])
        append(0, 3, [q])
        append(0, 3, [p])
        append(0, 3)  # every device's chains kept again, for the lost appends below
        lost("rolled back")
        lost("COMMIT failed")
        monkeypatch.setattr("gateway.rollups.KEPT_MAX", 4)  # over it, what was kept goes
        for writer in (0, 1, 0, 0, 1, 1, 0):
            append(writer, 10)  # into hour 07, then late minutes into 06
    finally:
        for engine in engines:
            engine.dispose()
    assert stored(place) == recomputed(place)
    assert {r.hour for r in stored(place)} == {FIRST_HOUR, FIRST_HOUR + timedelta(hours=1)}
    raw_rows(place)


def test_rebuild_errors_are_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PATIO_DATA_DIR": str(tmp_path),
           "PATIO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # fmt: skip
    # The installed `patio` script, as a user runs it.
    script = str(Path(sys.executable).with_name("patio"))
    result = subprocess.run(
        [script, "reports", "rebuild"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith("patio: database: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_concurrent_writers_and_a_rebuild(place: Place) -> None:
    """HTTP clients, an appender beside the gateway and a rebuild, all at once: nothing is
    counted twice or left out (each step that moves the progress mark holds the append lock)."""
    rng = random.Random(7)
    fleet = Fleet(rng)
    server = start_gateway(place.data_dir, database_url=place.database_url)
    try:
        for device_id, community in COMMUNITIES.items():
            fleet.keys[device_id] = server.device(device_id, community)
        envelopes = fleet.minutes(120)
        beside = envelopes[::5]  # appended directly: a fifth of every device's minutes
        http = [e for e in envelopes if e not in beside]
        parts = [http[i::4] for i in range(4)]
        engine = place.engine()
        try:
            rebuilder = Rollups(engine, Directory(engine, registry_key=""))
            with ThreadPoolExecutor(6) as pool:
                sent = [pool.submit(submit, server, part, random.Random(i))
                        for i, part in enumerate(parts)]  # fmt: skip
                direct = [pool.submit(append_directly, place, beside[i : i + 10])
                          for i in range(0, len(beside), 10)]  # fmt: skip
                rebuilt = pool.submit(rebuilder.rebuild)
                statuses = [s for future in sent for s in future.result()]
                for future in direct:
                    future.result()
                assert rebuilt.result().entries > 0
        finally:
            engine.dispose()
        assert set(statuses) == {"accepted"}
        submit(server, fleet.minutes(1), rng)  # a commit after the direct appends
        assert stored(place) == recomputed(place)
    finally:
        server.stop()


def test_the_docs_command_runs(place: Place, tmp_path: Path) -> None:
    """docs/rollups.md's shell block, run as written in a directory with a gateway's var/."""
    block = fenced.session(Path(__file__).parents[2] / "docs" / "rollups.md", "rollups-rebuild")
    command, shown = (line for line in block.splitlines() if line.strip())
    work = tmp_path / "work"
    (work / "var").mkdir(parents=True)
    (work / ".venv").symlink_to(Path(sys.executable).parents[1])
    rng = random.Random(3)
    fleet = Fleet(rng)
    server = start_gateway(work / "var", database_url=place.database_url)
    try:
        for device_id, community in COMMUNITIES.items():
            fleet.keys[device_id] = server.device(device_id, community)
        submit(server, fleet.minutes(30), rng)
    finally:
        server.stop()
    env = {k: v for k, v in server.env.items() if k != "PATIO_DATA_DIR"}
    result = subprocess.run(
        command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # The same line as the doc shows, with this run's numbers.
    pattern = re.escape(shown.lstrip("# ")).replace(r"\ ", " ")
    assert re.fullmatch(re.sub(r"\d+", r"\\d+", pattern), result.stdout.strip()), result.stdout
