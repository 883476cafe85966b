"""One aggregate per device and minute, on SQLite and PostgreSQL, and migration 0003."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from ledger import merkle
from ledger.encoding import canonical_json
from ledger.errors import ConflictError
from ledger.keys import NamedKey
from ledger.log import Appended, Log, Submission, entry_bytes
from ledger.storage import MIGRATIONS, VERSION_TABLE, open_engine

CONTRACT = "energy_minute@1"


def aggregate(key: NamedKey, seq: int, minute: int, watts: float = 1.0) -> Submission:
    """A signed energy_minute for 10:<minute> with its slot, as the contract hands it over."""
    start = f"2026-11-22T{10 + minute // 60:02d}:{minute % 60:02d}:00Z"
    payload = {
        "device_id": key.name,
        "seq": seq,
        "start": start,
        "period_s": 60,
        "readings": {"meter": {"unit": "Wh", "sum": watts}},
    }
    return Submission(
        contract=CONTRACT,
        payload=payload,
        sig=key.sign_payload(payload),
        device_id=key.name,
        seq=seq,
        minute=start,
    )


@pytest.fixture
def device() -> NamedKey:
    return NamedKey.generate("boiler-1")


@pytest.fixture
def log(database_url: str) -> Log:
    return Log.open(url=database_url, signer=NamedKey.generate("example.org/minute-test"))


def conflicts(log: Log) -> list[Any]:
    with log.engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT device_id, seq, existing_idx, rule, entry FROM conflicts ORDER BY id")
            )
        )


def test_a_second_aggregate_for_a_minute_is_a_conflict_kept_as_evidence(
    log: Log, device: NamedKey
) -> None:
    [first] = log.append([aggregate(device, 1, 0), aggregate(device, 2, 1)])[:1]
    assert isinstance(first, Appended)
    [outcome] = log.append([aggregate(device, 3, 0, watts=9.5)])
    assert isinstance(outcome, ConflictError)
    assert (outcome.rule, outcome.seq, outcome.minute) == ("minute", 3, "2026-11-22T10:00:00Z")
    assert outcome.log_tag_id == first.entry.log_tag_id
    assert (outcome.last_seq, outcome.last_start) == (2, "2026-11-22T10:01:00Z")
    assert "minute 2026-11-22T10:00:00Z" in str(outcome)
    [kept] = conflicts(log)
    assert (kept.device_id, kept.seq, kept.existing_idx, kept.rule) == ("boiler-1", 3, 0, "minute")
    assert b'"sum":9.5' in bytes(kept.entry)
    assert log.size() == 2


def test_identical_resend_is_a_duplicate_with_the_original_tag(log: Log, device: NamedKey) -> None:
    [first] = log.append([aggregate(device, 1, 0)])
    assert isinstance(first, Appended)
    [again] = log.append([aggregate(device, 1, 0)])
    assert isinstance(again, Appended) and again.status == "duplicate"
    assert again.entry.log_tag_id == first.entry.log_tag_id and conflicts(log) == []


def test_seq_conflicts_say_their_rule_and_where_the_device_stands(
    log: Log, device: NamedKey
) -> None:
    log.append([aggregate(device, seq, seq) for seq in range(1, 6)])
    # A device that lost its database starts again at seq 1, at a later minute; in the same
    # batch a new seq with a new minute is taken, and the answer counts it.
    outcome = log.append([aggregate(device, 1, 30), aggregate(device, 6, 31)])
    assert isinstance(outcome[0], ConflictError) and isinstance(outcome[1], Appended)
    assert (outcome[0].rule, outcome[0].last_seq, outcome[0].last_start) == (
        "seq",
        6,
        "2026-11-22T10:31:00Z",
    )
    assert [row.rule for row in conflicts(log)] == ["seq"]


def test_a_minute_twice_in_one_batch(log: Log, device: NamedKey) -> None:
    outcome = log.append([aggregate(device, 1, 5), aggregate(device, 2, 5, watts=3)])
    assert isinstance(outcome[0], Appended) and isinstance(outcome[1], ConflictError)
    assert outcome[1].log_tag_id == outcome[0].entry.log_tag_id


def test_an_old_minute_behind_the_latest_is_found(log: Log, device: NamedKey) -> None:
    """Minutes before a device's latest are looked up one by one (the rare path)."""
    others = [NamedKey.generate(f"d-{i}") for i in range(3)]
    log.append([aggregate(key, seq, seq) for key in [device, *others] for seq in range(1, 50)])
    outcome = log.append(
        [aggregate(device, 100, 7), aggregate(others[1], 3, 3), aggregate(device, 101, 60)]
    )
    assert isinstance(outcome[0], ConflictError) and outcome[0].rule == "minute"
    assert isinstance(outcome[1], Appended) and outcome[1].status == "duplicate"
    assert isinstance(outcome[2], Appended) and outcome[2].status == "accepted"


def test_submissions_without_a_slot_never_collide(log: Log, device: NamedKey) -> None:
    plain = [
        Submission(contract="x@1", payload={"n": n}, sig="", device_id=device.name, seq=n)
        for n in range(3)
    ]
    assert all(isinstance(o, Appended) for o in log.append(plain))


def test_the_database_refuses_a_second_slot_even_past_the_log(log: Log, device: NamedKey) -> None:
    """The unique index is the last word: a row written around Log.append is refused."""
    log.append([aggregate(device, 1, 0)])
    data = b"{}"
    with pytest.raises(DBAPIError), log.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entries (idx, leaf_hash, entry, device_id, seq, contract, "
                "received_at, minute) VALUES (1, :h, :e, 'boiler-1', 2, 'energy_minute@1', "
                "'2026-11-22T10:00:00.000Z', '2026-11-22T10:00:00Z')"
            ),
            {"h": merkle.leaf_hash(data), "e": data},
        )


def _migrate(url: str, revision: str) -> None:
    engine = open_engine(url, migrate=False)
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("version_table", VERSION_TABLE)
    with engine.connect() as connection:
        config.attributes["connection"] = connection.execution_options(patio_write=True)
        command.upgrade(config, revision)
        connection.commit()
    engine.dispose()


def test_migration_backfills_and_keeps_the_first_of_duplicate_minutes(
    database_url: str, device: NamedKey
) -> None:
    """A log written before the rule may hold two aggregates for one minute: the migration
    indexes the first, leaves the second for the audit, and history stays append-only."""
    _migrate(database_url, "0002_anchors_raw_tx")
    rows = []
    for index, (seq, minute, start) in enumerate(
        [(1, 0, None), (2, 1, None), (3, 0, None), (4, 2, "2026-11-22T10:02:00+00:00")]
    ):
        sub = aggregate(device, seq, minute)
        payload = dict(sub.payload, start=start) if start else sub.payload
        data = entry_bytes(
            contract=CONTRACT,
            payload_jcs=canonical_json(payload),
            sig=sub.sig,
            received_at="2026-11-22T11:00:00.000Z",
        )
        rows.append(
            {"i": index, "h": merkle.leaf_hash(data), "e": data, "d": device.name, "s": seq}
        )
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entries (idx, leaf_hash, entry, device_id, seq, contract, "
                "received_at) VALUES (:i, :h, :e, :d, :s, 'energy_minute@1', 'x')"
            ),
            rows,
        )
    engine.dispose()

    log = Log.open(url=database_url, signer=NamedKey.generate("example.org/minute-test"))
    with log.engine.connect() as conn:
        minutes = conn.execute(text("SELECT idx, minute FROM entries ORDER BY idx")).all()
    # The lenient "+00:00" spelling is not a slot the strict parser names: left NULL.
    assert [tuple(row) for row in minutes] == [
        (0, "2026-11-22T10:00:00Z"),
        (1, "2026-11-22T10:01:00Z"),
        (2, None),
        (3, None),
    ]
    with pytest.raises(DBAPIError), log.engine.begin() as conn:
        conn.execute(text("UPDATE entries SET minute = NULL WHERE idx = 0"))
    [outcome] = log.append([aggregate(device, 5, 0)])
    assert isinstance(outcome, ConflictError) and outcome.rule == "minute"
    assert outcome.log_tag_id == log.entries(start=0, limit=1)[0].log_tag_id
