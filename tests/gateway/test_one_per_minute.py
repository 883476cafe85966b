"""Issue 10 items 1 and 2 through HTTP on a real gateway (SQLite, then PostgreSQL): one
aggregate per device-minute, and `start` exactly as pinned."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from ledger.keys import NamedKey
from ledger.storage import database_url
from tests.gateway.server import Gateway


def minute_start(minutes_ago: int) -> str:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:00Z")


def envelope(key: NamedKey, seq: int, start: str, watts: float = 5.0) -> dict[str, Any]:
    payload = {
        "device_id": key.name,
        "seq": seq,
        "start": start,
        "period_s": 60,
        "readings": {"meter": {"unit": "Wh", "sum": watts}},
    }
    return {"payload": payload, "sig": key.sign_payload(payload)}


def post(client: httpx.Client, *envelopes: dict[str, Any]) -> list[dict[str, Any]]:
    reply = client.post("/v1/entries", json={"contract": "energy_minute", "envelopes": envelopes})
    assert reply.status_code == 200, reply.text
    results: list[dict[str, Any]] = reply.json()["results"]
    return results


def kept_conflicts(gateway: Gateway, device_id: str) -> list[Any]:
    engine = create_engine(database_url(gateway.env.get("PATIO_DATABASE_URL"), gateway.data_dir))
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT c.seq, c.rule, e.seq AS original FROM conflicts c "
                        "JOIN entries e ON e.idx = c.existing_idx WHERE c.device_id = :d "
                        "ORDER BY c.id"
                    ),
                    {"d": device_id},
                )
            )
    finally:
        engine.dispose()


def test_a_second_aggregate_for_a_minute_is_a_409_with_the_original(gateway: Gateway) -> None:
    key = gateway.device("minute-1", "hoa-minute")
    start = minute_start(30)
    with gateway.client() as client:
        [first] = post(client, envelope(key, 1, start))
        post(client, envelope(key, 2, minute_start(29)))
        [second] = post(client, envelope(key, 3, start, watts=99.0))
        [again] = post(client, envelope(key, 1, start))
    assert first["code"] == 201 and first["status"] == "accepted"
    assert second["code"] == 409 and second["status"] == "rejected"
    assert second["log_tag_id"] == first["log_tag_id"]
    assert (second["rule"], second["last_seq"], second["last_start"]) == (
        "minute",
        2,
        minute_start(29),
    )
    assert "minute" in second["error"]
    assert again == {**first, "status": "duplicate", "code": 200}
    assert [tuple(row) for row in kept_conflicts(gateway, key.name)] == [(3, "minute", 1)]


def test_a_seq_conflict_tells_the_device_where_it_stands(gateway: Gateway) -> None:
    key = gateway.device("minute-2", "hoa-minute")
    with gateway.client() as client:
        post(client, *(envelope(key, seq, minute_start(60 - seq)) for seq in range(1, 4)))
        [conflict] = post(client, envelope(key, 1, minute_start(20)))
    assert (conflict["code"], conflict["rule"]) == (409, "seq")
    assert (conflict["last_seq"], conflict["last_start"]) == (3, minute_start(57))


def test_the_restroom_route_answers_the_same_problem(gateway: Gateway) -> None:
    key = gateway.device("minute-3", "hoa-minute")
    start = minute_start(40)
    with gateway.client() as client:
        post(client, envelope(key, 1, start))
        reply = client.post("/api/energy_minute", json={"data": envelope(key, 2, start, 7.0)})
    assert reply.status_code == 409
    assert reply.headers["content-type"].startswith("application/problem+json")
    body = reply.json()
    assert (body["rule"], body["last_seq"], body["last_start"]) == ("minute", 1, start)


def test_concurrent_clients_record_exactly_one_aggregate_per_minute(gateway: Gateway) -> None:
    """Eight clients at once, each with aggregates for the same minutes under other seqs."""
    key = gateway.device("minute-4", "hoa-minute")
    minutes = [minute_start(100 + m) for m in range(5)]
    clients, barrier = 8, threading.Barrier(8)
    answers: list[list[dict[str, Any]]] = [[] for _ in range(clients)]

    def run(worker: int) -> None:
        batch = [
            envelope(key, 1000 * worker + m + 1, start, watts=float(worker))
            for m, start in enumerate(minutes)
        ]
        with gateway.client() as client:
            barrier.wait(timeout=30)
            for item in batch:  # one request each, so the writer sees them interleaved
                answers[worker] += post(client, item)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    by_minute: dict[int, list[dict[str, Any]]] = {m: [] for m in range(len(minutes))}
    for worker_answers in answers:
        assert len(worker_answers) == len(minutes)
        for m, answer in enumerate(worker_answers):
            by_minute[m].append(answer)
    for results in by_minute.values():
        assert sorted(r["code"] for r in results) == [201] + [409] * (clients - 1)
        [winner] = [r for r in results if r["code"] == 201]
        assert {r["log_tag_id"] for r in results} == {winner["log_tag_id"]}
    assert len(kept_conflicts(gateway, key.name)) == len(minutes) * (clients - 1)
    engine = create_engine(database_url(gateway.env.get("PATIO_DATABASE_URL"), gateway.data_dir))
    with engine.connect() as conn:
        recorded = conn.execute(
            text("SELECT count(*), count(DISTINCT minute) FROM entries WHERE device_id = :d"),
            {"d": key.name},
        ).one()
    engine.dispose()
    assert tuple(recorded) == (len(minutes), len(minutes))


BAD_STARTS = [
    "{d}T{t}+0000",
    "{d}T{t}+00",
    "{d}T{t}+00:00:00",
    "{d}T{t}+00:00",
    "{d}T{hm}Z",
    "{basic}",
    "2026-W44-6T09:44:00Z",
    "{d}T{t} Z",
    "{d}T{hm}:00.000000001Z",
    "{d}t{t}z",
    "{d}T{t}z",
    "{d}T{hm}:60Z",
    "2026-11-31T09:43:00Z",
    "{d}T{hm}:00.000Z",
]


@pytest.mark.parametrize("form", BAD_STARTS)
def test_a_start_not_as_pinned_is_a_per_slot_422_naming_start(gateway: Gateway, form: str) -> None:
    key = gateway.device(f"time-{BAD_STARTS.index(form)}", "hoa-time")
    moment = datetime.now(UTC) - timedelta(minutes=15)
    start = form.format(
        d=moment.strftime("%Y-%m-%d"),
        t=moment.strftime("%H:%M:00"),
        hm=moment.strftime("%H:%M"),
        basic=moment.strftime("%Y%m%dT%H%M00Z"),
    )
    good = envelope(key, 2, minute_start(16))
    with gateway.client() as client:
        bad, fine = post(client, envelope(key, 1, start), good)
    assert (bad["code"], bad["status"]) == (422, "rejected"), bad
    assert "start" in bad["error"]
    assert fine["code"] == 201  # the good envelope beside it is recorded


def test_the_restroom_route_refuses_a_bad_start_with_a_422_problem(gateway: Gateway) -> None:
    key = gateway.device("time-restroom", "hoa-time")
    moment = datetime.now(UTC) - timedelta(minutes=15)
    start = moment.strftime("%Y-%m-%dT%H:%M:00+00:00")
    with gateway.client() as client:
        reply = client.post("/api/energy_minute", json={"data": envelope(key, 1, start)})
    assert reply.status_code == 422
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert "start" in reply.json()["detail"]
