"""Legacy mode: Patio's POST /api/patio_save_energy with signed dataToStore bodies."""

from __future__ import annotations

import json
from pathlib import Path

from edge.agent import Agent
from edge.outbox import OutboxStatus
from tests.edge.conftest import COMMUNITY, DEVICE, T0, ConfigFactory
from tests.edge.fakes import FakeGateway, ManualClock

NIGHT = T0 - 8 * 3600  # 02:00 UTC: the panels give nothing


def test_legacy_mode_sends_signed_patio_bodies_and_skips_idle_readings(
    make_config: ConfigFactory, gateway: FakeGateway
) -> None:
    config = make_config(
        agent={"grace_s": 1.0},
        delivery={"transport": "legacy", "url": gateway.url},
        sensors=[
            {"driver": "simulator", "name": "pv", "kind": "solar", "legacy_type": "production"},
            {"driver": "simulator", "name": "house", "kind": "household", "interval_s": 5.0},
            {"driver": "simulator", "name": "boiler", "kind": "boiler", "interval_s": 5.0},
        ],
    )
    clock = ManualClock(NIGHT)
    agent = Agent(config=config, clock=clock)
    try:
        while clock.t < NIGHT + 3 * 60 + 2:
            agent.step(clock.t)
            clock.t += 1
        assert sum(agent.outbox.status().pending.values()) == 0
    finally:
        agent.close()
    # One request per record, each signed over JCS({"device_id", "seq", "dataToStore"})
    # (the fake gateway verifies every signature before recording).
    assert [path for path, _ in gateway.requests] == ["/api/patio_save_energy"] * 3
    records = [json.loads(gateway.entries[key])["payload"] for key in gateway.order]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert all(r["device_id"] == DEVICE for r in records)
    stored = [r["dataToStore"] for r in records]
    assert [d["datetime"] for d in stored] == [
        "2026-11-22 02:00",
        "2026-11-22 02:01",
        "2026-11-22 02:02",
    ]
    # Only the household: the night-time panels read 0 W (skipped as Patio does), and the
    # boiler reports temperatures, which Patio's save contract has no place for.
    for data in stored:
        assert set(data) == {"amount", "datetime", "sensor_id", "type", "community_unique_id"}
        assert (data["sensor_id"], data["type"], data["community_unique_id"]) == (
            "house_w",
            "consumption",
            COMMUNITY,
        )
        watts = float(data["amount"].removesuffix("W"))
        assert data["amount"].endswith("W") and 150 < watts < 5000


def test_daytime_generation_is_sent_with_its_patio_type(
    make_config: ConfigFactory, gateway: FakeGateway, clock: ManualClock
) -> None:
    config = make_config(
        agent={"grace_s": 1.0},
        delivery={"transport": "legacy", "url": gateway.url},
        sensors=[
            {"driver": "simulator", "name": "pv", "kind": "solar", "legacy_type": "production"}
        ],
    )
    agent = Agent(config=config, clock=clock)
    try:
        while clock.t < T0 + 62:
            agent.step(clock.t)
            clock.t += 1
    finally:
        agent.close()
    [key] = gateway.order
    data = json.loads(gateway.entries[key])["payload"]["dataToStore"]
    assert (data["sensor_id"], data["type"], data["datetime"]) == (
        "pv_w",
        "production",
        "2026-11-22 10:00",
    )
    assert float(data["amount"].removesuffix("W")) > 100


def test_a_conflict_is_dead_lettered_not_taken_for_a_duplicate(
    make_config: ConfigFactory, gateway: FakeGateway, tmp_path: Path
) -> None:
    def run_for_two_minutes(start: float) -> OutboxStatus:
        config = make_config(
            agent={"grace_s": 1.0},
            delivery={"transport": "legacy", "url": gateway.url},
            sensors=[{"driver": "simulator", "name": "house", "kind": "household"}],
        )
        clock = ManualClock(start)
        agent = Agent(config=config, clock=clock)
        try:
            while clock.t < start + 2 * 60 + 2:
                agent.step(clock.t)
                clock.t += 1
            return agent.outbox.status()
        finally:
            agent.close()

    assert run_for_two_minutes(T0).acked == 2
    for path in (tmp_path / "var").glob("edge.db*"):
        path.unlink()  # the SD card died: the seq counter starts again at 1
    status = run_for_two_minutes(T0 + 3600)
    # Seqs 1 and 2 now carry other readings: the gateway keeps the first bytes and answers
    # 409 Conflict. That is a refusal to report, not a delivery.
    assert (status.acked, status.dead) == (0, 2)
    assert all(d["error"] == "HTTP 409: other bytes" for d in status.dead_letters)
    assert gateway.conflicts == [(DEVICE, 1), (DEVICE, 2)]
