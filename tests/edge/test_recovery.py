"""The outbox after a seq conflict it never caused: renumber, sign again, keep the rest."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.database import Store
from edge.outbox import Outbox
from edge.transports import Result, result_from
from ledger.encoding import canonical_json
from ledger.keys import NamedKey, verify_signature
from tests.edge.conftest import DEVICE, T0

READINGS = {"t": {"unit": "Cel", "n": 1, "missing": 0, "avg": 20.0, "min": 20.0, "max": 20.0}}
RECORD = {
    "amount": "5W",
    "datetime": "2026-11-22 10:00",
    "sensor_id": "house_w",
    "type": "power",
    "community_unique_id": "hoa-1",
}


@pytest.fixture
def outbox(tmp_path: Path, device_key: NamedKey) -> Iterator[Outbox]:
    store = Store.open(tmp_path / "edge.db")
    yield Outbox(store=store, key=device_key, device_id=DEVICE, rng=random.Random(4))
    store.close()


def conflict(seq: int, last_seq: int, rule: str = "seq") -> Result:
    return Result(
        seq, "rejected", "c274b5" + "00" * 32, "conflict", rule, last_seq, "2026-11-22T09:00:00Z"
    )


def bodies(outbox: Outbox) -> dict[int, dict[str, object]]:
    rows = outbox.store.connection.execute("SELECT seq, body FROM outbox WHERE acked_ms IS NULL")
    return {seq: json.loads(body) for seq, body in rows}


def test_refused_items_are_renumbered_after_the_ledger_and_signed_again(
    outbox: Outbox, device_key: NamedKey
) -> None:
    with outbox.store.transaction():
        for k in range(4):
            outbox.add_minute(int(T0 * 1000) + 60_000 * k, READINGS)
    # Seqs 1 and 2 came back as seq conflicts; 3 was accepted; 4 has no answer yet.
    delivered, dead = outbox.apply(
        [conflict(1, 40), conflict(2, 40), Result(3, "accepted", "c274b5" + "11" * 32)], T0
    )
    assert (delivered, dead) == (1, 0)
    pending = bodies(outbox)
    assert sorted(pending) == [4, 41, 42]  # 4 waits for its own answer
    for seq in (41, 42):
        payload = pending[seq]["payload"]
        assert isinstance(payload, dict) and payload["seq"] == seq
        verify_signature(
            device_key.signing_key.verify_key, canonical_json(payload), pending[seq]["sig"]
        )
    assert outbox.status().next_seq == 43
    with outbox.store.transaction():
        assert outbox.add_minute(int(T0 * 1000) + 60_000 * 9, READINGS) == 43


def test_a_late_answer_for_an_old_number_changes_nothing(outbox: Outbox) -> None:
    with outbox.store.transaction():
        outbox.add_minute(int(T0 * 1000), READINGS)
    outbox.apply([conflict(1, 7)], T0)
    outbox.apply([conflict(1, 9)], T0)  # MQTT: the same refusal, acked twice
    assert sorted(bodies(outbox)) == [8]


def test_a_minute_conflict_is_a_dead_letter(outbox: Outbox) -> None:
    with outbox.store.transaction():
        outbox.add_minute(int(T0 * 1000), READINGS)
    assert outbox.apply([conflict(1, 7, rule="minute")], T0) == (0, 1)
    assert outbox.status().dead == 1 and bodies(outbox) == {}


def test_legacy_requests_are_signed_again_too(outbox: Outbox, device_key: NamedKey) -> None:
    with outbox.store.transaction():
        outbox.add_legacy(int(T0 * 1000), RECORD)
    outbox.apply([conflict(1, 5)], T0)
    [(seq, body)] = bodies(outbox).items()
    keys = body["keys"]
    assert isinstance(keys, dict) and seq == keys["seq"] == 6
    signed = {"device_id": DEVICE, "seq": 6, "dataToStore": RECORD}
    verify_signature(device_key.signing_key.verify_key, canonical_json(signed), keys["sig"])


def test_answers_carry_where_the_device_stands() -> None:
    answer = {"status": "rejected", "log_tag_id": None, "error": "x", "rule": "seq",
              "last_seq": 12, "last_start": "2026-11-22T10:00:00Z"}  # fmt: skip
    assert result_from(3, answer) == Result(
        3, "rejected", None, "x", "seq", 12, "2026-11-22T10:00:00Z"
    )
    odd = dict(answer, last_seq=True, rule=5)
    assert result_from(3, odd) == Result(3, "rejected", None, "x", None, None, answer["last_start"])
