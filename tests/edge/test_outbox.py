"""The durable outbox over HTTP: seq allocation, acks, backoff, splitting and dead letters."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.database import Store
from edge.outbox import Outbox
from edge.transports.http import EntriesTransport
from ledger.keys import NamedKey
from tests.edge.conftest import DEVICE, T0
from tests.edge.fakes import FakeGateway

READINGS = {"t": {"unit": "Cel", "n": 1, "missing": 0, "avg": 20.0, "min": 20.0, "max": 20.0}}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh agent database."""
    opened = Store.open(tmp_path / "edge.db")
    yield opened
    opened.close()


def outbox_for(store: Store, key: NamedKey, **options: float) -> Outbox:
    """An outbox with a seeded jitter source."""
    return Outbox(store=store, key=key, device_id=DEVICE, rng=random.Random(4), **options)


def fill(outbox: Outbox, count: int, first_minute: int = 0) -> list[int]:
    """Add `count` consecutive minutes; their seqs."""
    seqs = []
    with outbox.store.transaction():
        for k in range(first_minute, first_minute + count):
            seqs.append(outbox.add_minute(int(T0 * 1000) + 60_000 * k, READINGS))
    return seqs


def transport(gateway: FakeGateway, batch_size: int = 100) -> EntriesTransport:
    """HTTP transport to the fake gateway."""
    return EntriesTransport(url=gateway.url, batch_size=batch_size, timeout_s=5.0)


def pending_seqs(outbox: Outbox) -> list[int]:
    """Seqs still waiting for an ack."""
    return [item.seq for item in outbox.pending("energy_minute", 10_000)]


def test_seqs_are_contiguous_and_never_reused(
    store: Store, device_key: NamedKey, tmp_path: Path
) -> None:
    outbox = outbox_for(store, device_key)
    assert fill(outbox, 3) == [1, 2, 3]
    # Seq 3 refused for good, everything else acked and then forgotten by retention.
    outbox.apply([*[_ack(s) for s in (1, 2)], _reject(3)], T0)
    assert outbox.prune_acked(before_ms=int(T0 * 1000) + 1) == 2
    store.close()
    reopened = Store.open(tmp_path / "edge.db")
    again = outbox_for(reopened, device_key)
    assert fill(again, 1, first_minute=3) == [4]
    # Even if the counter row were lost, allocation stays above every stored seq.
    with reopened.transaction() as db:
        db.execute("DELETE FROM state WHERE key = 'next_seq'")
    assert fill(again, 1, first_minute=4) == [5]
    reopened.close()


def test_delivery_in_batches_acks_every_item(
    store: Store, device_key: NamedKey, gateway: FakeGateway
) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 25)
    report = outbox.flush(transport(gateway, batch_size=10), T0)
    assert (report.delivered, report.dead, report.error) == (25, 0, None)
    assert gateway.requests == [("/v1/entries", 10), ("/v1/entries", 10), ("/v1/entries", 5)]
    assert [p["seq"] for p in gateway.payloads(DEVICE)] == list(range(1, 26))
    tags = store.connection.execute("SELECT DISTINCT ack_status, length(log_tag_id) FROM outbox")
    assert list(tags) == [("accepted", 70)]
    assert pending_seqs(outbox) == []


def test_a_lost_answer_is_resent_and_acked_as_duplicate(
    store: Store, device_key: NamedKey, gateway: FakeGateway
) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 3)
    outbox.flush(transport(gateway), T0)
    with store.transaction() as db:  # as if the answer never arrived
        db.execute("UPDATE outbox SET acked_ms = NULL, ack_status = NULL")
    report = outbox.flush(transport(gateway), T0 + 1)
    assert report.delivered == 3
    statuses = store.connection.execute("SELECT DISTINCT ack_status FROM outbox").fetchall()
    assert statuses == [("duplicate",)]
    assert len(gateway.entries) == 3 and gateway.conflicts == []


def test_backoff_is_exponential_with_jitter_and_capped(store: Store, device_key: NamedKey) -> None:
    outbox = outbox_for(store, device_key, backoff_base_s=2.0, backoff_max_s=60.0)
    for failures in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (failures - 1))
        delays = {outbox.backoff_delay(failures) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 40  # jittered, not a fixed schedule


def test_a_down_gateway_is_retried_on_the_backoff_schedule(
    store: Store, device_key: NamedKey, gateway: FakeGateway
) -> None:
    outbox = outbox_for(store, device_key, backoff_base_s=2.0, backoff_max_s=60.0)
    fill(outbox, 2)
    http = transport(gateway)
    gateway.down = True
    now, attempts = T0, []
    while now < T0 + 600:  # step every second for ten simulated minutes
        before = len(gateway.requests)
        outbox.flush(http, now)
        if len(gateway.requests) > before:
            attempts.append(now - T0)
        now += 1
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert attempts[0] == 0 and 8 <= len(attempts) <= 20
    assert all(gap <= 61 for gap in gaps) and max(gaps) >= 30  # grew, then capped at 60 s
    assert pending_seqs(outbox) == [1, 2] and outbox.failures == len(attempts)
    gateway.down = False
    while pending_seqs(outbox):
        outbox.flush(http, now)
        now += 1
    assert outbox.failures == 0 and len(gateway.entries) == 2


def test_retry_after_is_honoured(store: Store, device_key: NamedKey, gateway: FakeGateway) -> None:
    outbox = outbox_for(store, device_key, backoff_base_s=1.0, backoff_max_s=300.0)
    fill(outbox, 1)
    gateway.fail_next, gateway.retry_after = [429], 120
    report = outbox.flush(transport(gateway), T0)
    assert report.error == "HTTP 429: failing on purpose"
    assert outbox.next_attempt == T0 + 120
    assert outbox.flush(transport(gateway), T0 + 119).skipped


@pytest.mark.parametrize("status", [500, 502, 503, 404, 408])
def test_server_errors_and_missing_routes_are_transient(
    store: Store, device_key: NamedKey, gateway: FakeGateway, status: int
) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 2)
    gateway.fail_next = [status]
    report = outbox.flush(transport(gateway), T0)
    assert (report.delivered, report.dead) == (0, 0)
    assert pending_seqs(outbox) == [1, 2] and outbox.status().dead == 0


def test_a_rejected_envelope_goes_to_dead_letters(
    store: Store, device_key: NamedKey, gateway: FakeGateway
) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 5)
    gateway.reject_seqs = {3}
    report = outbox.flush(transport(gateway), T0)
    assert (report.delivered, report.dead) == (4, 1)
    status = outbox.status()
    assert status.dead == 1 and status.pending == {}
    assert status.dead_letters == [
        {
            "seq": 3,
            "contract": "energy_minute",
            "start_ms": int(T0 * 1000) + 120_000,
            "error": "refused by the test",
        }
    ]
    # Fixed on the gateway side: requeued with the same seq and bytes, then delivered.
    body = store.connection.execute("SELECT body FROM dead_letters").fetchone()[0]
    gateway.reject_seqs = set()
    assert outbox.requeue_dead() == 1
    assert outbox.flush(transport(gateway), T0 + 1).delivered == 1
    assert gateway.entries[(DEVICE, 3)] == bytes(body)
    assert outbox.status().dead == 0


def test_a_refused_batch_is_split_to_set_aside_only_the_bad_envelope(
    store: Store, device_key: NamedKey, gateway: FakeGateway
) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 8)
    gateway.bad_request_seqs = {6}
    report = outbox.flush(transport(gateway), T0)
    assert (report.delivered, report.dead) == (7, 1)
    [letter] = outbox.status().dead_letters
    assert letter["seq"] == 6
    assert letter["error"] == "HTTP 422: envelope does not match the energy_minute schema"
    assert sorted(s for _, s in gateway.entries) == [1, 2, 3, 4, 5, 7, 8]


def test_409_is_the_duplicate_answer(
    store: Store, device_key: NamedKey, gateway: FakeGateway
) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 1)
    gateway.fail_next = [409]
    report = outbox.flush(transport(gateway), T0)
    assert (report.delivered, report.dead) == (1, 0)
    row = store.connection.execute("SELECT ack_status FROM outbox").fetchone()
    assert row == ("duplicate",)


def test_status_counts(store: Store, device_key: NamedKey) -> None:
    outbox = outbox_for(store, device_key)
    fill(outbox, 4)
    outbox.apply([_ack(1), _reject(2)], T0)
    status = outbox.status()
    assert (status.pending, status.acked, status.dead, status.next_seq) == (
        {"energy_minute": 2},
        1,
        1,
        5,
    )
    assert status.oldest_pending_ms == int(T0 * 1000) + 120_000
    body = store.connection.execute("SELECT body FROM outbox WHERE seq = 3").fetchone()[0]
    assert json.loads(body)["payload"]["seq"] == 3


def _ack(seq: int):  # type: ignore[no-untyped-def]
    from edge.transports import Result

    return Result(seq, "accepted", "c274b5" + "00" * 32)


def _reject(seq: int):  # type: ignore[no-untyped-def]
    from edge.transports import Result

    return Result(seq, "rejected", None, "refused")
