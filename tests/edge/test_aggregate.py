"""Minute aggregation: the exact semantics, through the pure reducers and a running agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.aggregate import counter, gauge, legacy_amount, legacy_records, state
from edge.drivers.tasmota import Settings as TasmotaSettings
from edge.drivers.tasmota import TasmotaPlug
from ledger.encoding import canonical_json
from ledger.keys import NamedKey, decode_public_key, verify_signature
from tests.edge.conftest import DEVICE, T0, ConfigFactory
from tests.edge.fakes import FakeGateway, ManualClock, W1Tree

SERIAL = "0000075a3c2e"


# The reducers.


def test_gauge_counts_missing_samples_and_does_not_average_them() -> None:
    assert gauge("Cel", [20.0, None, 22.0, None, 21.0]) == {
        "unit": "Cel",
        "n": 3,
        "missing": 2,
        "avg": 21.0,
        "min": 20.0,
        "max": 22.0,
    }


def test_gauge_without_present_samples_has_null_statistics() -> None:
    assert gauge("Cel", [None, None]) == {
        "unit": "Cel",
        "n": 0,
        "missing": 2,
        "avg": None,
        "min": None,
        "max": None,
    }


def test_gauge_rounds_to_four_decimals_and_never_writes_minus_zero() -> None:
    reading = gauge("W", [1 / 3, -0.00001])
    assert reading["avg"] == 0.1667 and reading["max"] == 0.3333 and reading["min"] == 0.0
    assert b"-0" not in canonical_json(reading)


def test_counter_sums_increments_from_the_previous_minute() -> None:
    assert counter("Wh", [1000.0, 1002.5, None, 1004.0], baseline=999.0) == {
        "unit": "Wh",
        "sum": 5.0,
        "n": 3,
        "missing": 1,
    }


def test_counter_reset_counts_the_energy_since_the_reset() -> None:
    # 10.017 kWh, then the plug restarts its Total from zero and reads 3 Wh, then 5 Wh.
    assert counter("Wh", [10017.0, 10018.0, 3.0, 5.0], baseline=10016.0)["sum"] == 2.0 + 3.0 + 2.0


def test_counter_without_a_baseline_starts_counting_at_its_first_sample() -> None:
    assert counter("Wh", [50.0, 52.0], baseline=None)["sum"] == 2.0
    # No present sample: the contract needs a number, n = 0 says there was nothing to count.
    assert counter("Wh", [None, None], baseline=50.0) == {
        "unit": "Wh",
        "sum": 0.0,
        "n": 0,
        "missing": 2,
    }


def test_state_gives_any_and_on_fraction_over_present_samples() -> None:
    assert state([1.0, 0.0, 0.0, None, 0.0]) == {
        "unit": "bool",
        "any": True,
        "on_fraction": 0.25,
        "n": 4,
        "missing": 1,
    }
    assert state([0.0, 0.0])["on_fraction"] == 0.0
    assert state([None]) == {"unit": "bool", "any": False, "on_fraction": 0.0, "n": 0, "missing": 1}


def test_legacy_records_skip_readings_of_a_milliwatt_or_less() -> None:
    readings = {
        "pv_w": {"unit": "W", "avg": 0.001},
        "house_w": {"unit": "W", "avg": 203.5},
        "heat_w": {"unit": "W", "avg": 0.0012},
        "boiler_water": {"unit": "Cel", "avg": 60.0},
        "dead_w": {"unit": "W", "avg": None},
    }
    records = legacy_records(
        start_ms=int(T0 * 1000),
        readings=readings,
        types={"house_w": "consumption"},
        community="hoa-1",
    )
    assert records == [
        {
            "amount": "203.5W",
            "datetime": "2026-11-22 10:00",
            "sensor_id": "house_w",
            "type": "consumption",
            "community_unique_id": "hoa-1",
        },
        {
            "amount": "0.001W",
            "datetime": "2026-11-22 10:00",
            "sensor_id": "heat_w",
            "type": "consumption",
            "community_unique_id": "hoa-1",
        },
    ]
    assert legacy_amount(5.0) == "5W"


# Through a running agent on a manual clock.


@pytest.fixture
def tree(tmp_path: Path) -> W1Tree:
    """A fake w1 bus."""
    return W1Tree(tmp_path / "w1")


@pytest.fixture
def agent(make_config: ConfigFactory, tree: W1Tree, clock: ManualClock) -> Iterator[Agent]:
    """An agent with one DS18B20 read every 5 s."""
    config = make_config(
        agent={"grace_s": 2.0},
        sensors=[
            {
                "driver": "ds18b20",
                "name": "water",
                "sensor_id": SERIAL,
                "interval_s": 5.0,
                "w1_base_dir": str(tree.base),
                "retry_delay_s": 0.0,
            }
        ],
    )
    running = Agent(config=config, clock=clock)
    yield running
    running.close()


def drive(agent: Agent, clock: ManualClock, until: float, step: float = 1.0) -> None:
    """Step the agent every `step` seconds of simulated time up to `until` (exclusive)."""
    while clock.t < until:
        agent.step(clock.t)
        clock.t += step


def outbox_payloads(agent: Agent) -> list[dict[str, object]]:
    """The stored envelopes' payloads, by seq."""
    rows = agent.store.connection.execute("SELECT body FROM outbox ORDER BY seq")
    return [json.loads(body)["payload"] for (body,) in rows]


def test_windows_are_half_open_and_only_closed_minutes_are_emitted(
    agent: Agent, tree: W1Tree, clock: ManualClock
) -> None:
    for k in range(12):
        tree.set(SERIAL, 20.0 + k)  # one value per 5 s sample of minute 10:00
    # Samples at 10:00:00, :05, ... :55 read 20..31; the one at 10:01:00 belongs to 10:01.
    values = iter([20.0 + k for k in range(12)] + [99.0] * 100)
    while clock.t < T0 + 62:
        tree.set(SERIAL, next(values)) if clock.t % 5 == 0 else None
        agent.step(clock.t)
        clock.t += 1
    assert outbox_payloads(agent) == []  # 10:00 ends at 10:01:00, plus 2 s of grace
    agent.step(T0 + 62)
    [payload] = outbox_payloads(agent)
    assert payload == {
        "device_id": DEVICE,
        "seq": 1,
        "start": "2026-11-22T10:00:00Z",
        "period_s": 60,
        "readings": {
            "water": {"unit": "Cel", "n": 12, "missing": 0, "avg": 25.5, "min": 20.0, "max": 31.0}
        },
    }


def test_a_sensor_unplugged_mid_minute_counts_missing_samples(
    agent: Agent, tree: W1Tree, clock: ManualClock
) -> None:
    tree.set(SERIAL, 60.0)
    drive(agent, clock, T0 + 30)
    tree.unplug(SERIAL)
    drive(agent, clock, T0 + 125)
    first, second = outbox_payloads(agent)
    assert first["readings"] == {
        "water": {"unit": "Cel", "n": 6, "missing": 6, "avg": 60.0, "min": 60.0, "max": 60.0}
    }
    assert second["readings"] == {
        "water": {"unit": "Cel", "n": 0, "missing": 12, "avg": None, "min": None, "max": None}
    }


def test_each_minute_is_one_signed_envelope_with_the_next_seq(
    agent: Agent, tree: W1Tree, clock: ManualClock, device_key: NamedKey
) -> None:
    tree.set(SERIAL, 40.0)
    drive(agent, clock, T0 + 10 * 60 + 5)
    rows = agent.store.connection.execute("SELECT seq, start_ms, body FROM outbox ORDER BY seq")
    rows = list(rows)
    assert [seq for seq, _, _ in rows] == list(range(1, 11))
    assert [start for _, start, _ in rows] == [int(T0 * 1000) + 60_000 * k for k in range(10)]
    for _, _, body in rows:
        envelope = json.loads(body)
        assert bytes(body) == canonical_json(envelope)  # stored as JCS
        verify_signature(
            decode_public_key(device_key.public_key_b64),
            canonical_json(envelope["payload"]),
            envelope["sig"],
        )


def test_a_tasmota_counter_reset_is_counted_once(
    make_config: ConfigFactory, clock: ManualClock
) -> None:
    config = make_config(
        sensors=[{"driver": "tasmota", "name": "plug", "topic": "plug_1", "interval_s": 10.0}]
    )
    settings = config.sensors[0].settings
    assert isinstance(settings, TasmotaSettings)
    plug = TasmotaPlug(settings, clock=clock)  # fed directly; MQTT is tested with a broker
    agent = Agent(config=config, clock=clock, drivers={"plug": plug})
    try:
        # kWh every 10 s; the plug restarts its Total after the third message.
        totals = iter(
            [10.000, 10.002, 10.004, 0.001, 0.003, 0.005, 0.007, 0.008, 0.010, 0.010, 0.010, 0.011]
        )
        while clock.t < T0 + 126:
            total = next(totals, None) if clock.t % 10 == 0 else None
            if total is not None:
                plug.feed(json.dumps({"ENERGY": {"Total": total, "Power": 120}}).encode())
            agent.step(clock.t)
            clock.t += 1
        first, second = outbox_payloads(agent)
    finally:
        agent.close()
    # 10:00: 10.000 -> 10.002 -> 10.004 -> (reset) 0.001 -> 0.003 -> 0.005 = 2+2+1+2+2 Wh.
    assert first["readings"] == {
        "plug_w": {"unit": "W", "n": 6, "missing": 0, "avg": 120.0, "min": 120.0, "max": 120.0},
        "plug_wh": {"unit": "Wh", "sum": 9.0, "n": 6, "missing": 0},
    }
    # 10:01 starts from the last 10:00 value as its baseline: 0.005 -> 0.011 kWh.
    assert second["readings"]["plug_wh"]["sum"] == 6.0  # type: ignore[index]


def test_on_fraction_from_a_boiler_fan(make_config: ConfigFactory, clock: ManualClock) -> None:
    config = make_config(
        sensors=[{"driver": "simulator", "name": "b", "kind": "boiler", "interval_s": 1.0}]
    )
    agent = Agent(config=config, clock=clock)
    try:
        drive(agent, clock, T0 + 13 * 60 + 10)
        payloads = outbox_payloads(agent)
    finally:
        agent.close()
    fans = [p["readings"]["b_fan"] for p in payloads]  # type: ignore[index]
    fractions = [f["on_fraction"] for f in fans]
    # The burner fires 4 minutes of every 12: whole minutes on, whole minutes off, and at
    # most two minutes where it switches part-way through.
    assert fractions.count(1.0) >= 3 and fractions.count(0.0) >= 7
    assert all(f["any"] == (f["on_fraction"] > 0) for f in fans)
    assert len([f for f in fractions if 0 < f < 1]) <= 3


def test_nothing_is_sampled_before_the_clock_is_set(
    agent: Agent, tree: W1Tree, clock: ManualClock
) -> None:
    tree.set(SERIAL, 50.0)
    boot = 86_400.0 * 3  # a Raspberry Pi without a battery clock, before NTP: 1970
    for k in range(200):
        assert agent.step(boot + k) == boot + k + 5
    assert agent.store.connection.execute("SELECT count(*) FROM samples").fetchone() == (0,)
    drive(agent, clock, T0 + 63)  # NTP answered
    assert [p["start"] for p in outbox_payloads(agent)] == ["2026-11-22T10:00:00Z"]


def test_retention_prunes_raw_samples_and_acknowledged_aggregates(
    make_config: ConfigFactory, clock: ManualClock, gateway: FakeGateway
) -> None:
    config = make_config(
        agent={"grace_s": 1.0, "raw_retention_h": 0.25, "acked_retention_h": 0.5},
        delivery={"url": gateway.url},
        sensors=[{"driver": "simulator", "name": "house", "kind": "household", "interval_s": 10.0}],
    )
    agent = Agent(config=config, clock=clock)
    db = agent.store.connection
    try:
        drive(agent, clock, T0 + 3611, step=10.0)  # 10:00 to 11:00:10; minute 10:59 closed
        agent.prune(clock.t)
        oldest_sample = db.execute("SELECT min(ts_ms) FROM samples").fetchone()[0] / 1000
        oldest_acked = db.execute("SELECT min(start_ms) FROM outbox").fetchone()[0] / 1000
        acked = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        agent.close()
    assert clock.t == T0 + 3620
    assert oldest_sample >= clock.t - 15 * 60  # 15 minutes of raw samples kept
    # Minute m is acknowledged at the step 70 s after its start and kept 30 minutes after
    # that: minutes 10:30 to 10:59 remain.
    assert oldest_acked == T0 + 30 * 60
    assert acked == 30 and len(gateway.entries) == 60
