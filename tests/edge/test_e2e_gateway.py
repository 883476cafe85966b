"""End to end against the real gateway (`patio gateway serve`): one ledger entry per minute."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.aggregate import minute_start
from edge.drivers.tasmota import Settings as TasmotaSettings
from edge.drivers.tasmota import TasmotaPlug
from edge.transports.mqtt import MqttTransport
from ledger.encoding import parse_rfc3339
from ledger.keys import NamedKey
from tests.edge.conftest import COMMUNITY, ConfigFactory
from tests.edge.fakes import (
    PATIO,
    Broker,
    HoldingProxy,
    ManualClock,
    RealGateway,
    W1Tree,
    toml_text,
    wait_until,
)

# Two hours ago, on the minute: the gateway refuses minutes from the future.
PAST = (int(time.time()) // 60) * 60 - 2 * 3600


_devices = itertools.count(1)


@dataclass
class Shared:
    """One broker and one gateway (with MQTT ingest) for the whole module."""

    broker: Broker
    gateway: RealGateway


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """Start Mosquitto and `patio gateway serve` once; each test registers its own device."""
    RealGateway.require()
    Broker.require()
    folder = tmp_path_factory.mktemp("e2e")
    broker = Broker(folder / "mosquitto")
    broker.start()
    gateway = RealGateway(folder / "gateway", mqtt_port=broker.port)
    gateway.folder.mkdir()
    gateway.create_token()
    gateway.start()
    gateway.admin("/v1/communities", {"id": COMMUNITY, "name": "HOA"})
    try:
        yield Shared(broker, gateway)
    finally:
        gateway.stop()
        broker.stop()


@pytest.fixture
def device(shared: Shared, device_key: NamedKey) -> str:
    """A fresh device id registered with this test's key."""
    device_id = f"e2e-{next(_devices)}"
    shared.gateway.admin(
        "/v1/devices",
        {"id": device_id, "community_id": COMMUNITY, "public_key": device_key.public_key_b64},
    )
    return device_id


@pytest.fixture
def real_gateway(shared: Shared) -> Iterator[RealGateway]:
    """The shared gateway, running again after the test whatever the test did to it."""
    yield shared.gateway
    if shared.gateway.process is None:
        shared.gateway.start()


def assert_one_entry_per_minute(
    gateway: RealGateway, device: str, expected: int, *, agent_was_down: bool = False
) -> list[dict[str, Any]]:
    """The ledger holds each of the device's minutes once, under seqs 1..n, in seq order.

    `agent_was_down`: minutes in which the agent was not running (at time_scale 120 a
    one-second restart is two simulated minutes) have no samples and so no aggregate.
    """
    payloads = sorted(gateway.payloads(device), key=lambda p: int(p["seq"]))
    starts = [str(p["start"]) for p in payloads]
    assert len(set(starts)) == len(starts), "a minute is in the ledger twice"
    assert [int(p["seq"]) for p in payloads] == list(range(1, len(payloads) + 1))
    assert len(payloads) == expected
    assert starts == sorted(starts), "seq order is not minute order"
    if not agent_was_down:
        first = int(parse_rfc3339(starts[0], what="start").timestamp() * 1000)
        assert starts == [minute_start(first + 60_000 * k) for k in range(len(starts))]
    return payloads


def pending(agent: Agent) -> int:
    """Items waiting for an ack."""
    return sum(agent.outbox.status().pending.values())


def test_gateway_down_for_hours_then_back(
    real_gateway: RealGateway, device: str, make_config: ConfigFactory
) -> None:
    real_gateway.stop()
    clock = ManualClock(PAST - 3600)
    config = make_config(
        device_id=device,
        agent={"grace_s": 1.0},
        delivery={"url": real_gateway.url, "backoff_max_s": 600.0},
        sensors=[
            {"driver": "simulator", "name": "house", "kind": "household", "interval_s": 30.0},
            {"driver": "simulator", "name": "boiler", "kind": "boiler", "interval_s": 30.0},
        ],
    )
    agent = Agent(config=config, clock=clock)
    try:
        while clock.t <= PAST - 3600 + 3 * 3600 + 30:  # three simulated hours of outage
            agent.step(clock.t)
            clock.t += 30
        assert pending(agent) == 180 and agent.outbox.failures >= 5
        real_gateway.start()
        for _ in range(40):  # the backoff is at most 10 simulated minutes
            agent.step(clock.t)
            clock.t += 30
            if not pending(agent):
                break
        assert pending(agent) == 0
        total = agent.outbox.status().acked
    finally:
        agent.close()
    payloads = assert_one_entry_per_minute(real_gateway, device, total)
    assert total >= 180
    readings = payloads[0]["readings"]
    assert set(readings) == {"house_w", "house_wh", "boiler_water", "boiler_flue", "boiler_fan"}


def test_edge_cases_pass_the_real_contract(
    real_gateway: RealGateway, device: str, make_config: ConfigFactory, tmp_path: Path
) -> None:
    """Unplugged sensors (null statistics, n = 0) and counter resets are accepted as sent."""
    tree = W1Tree(tmp_path / "w1")
    tree.set("0000075a3c2e", 61.5)
    config = make_config(
        device_id=device,
        agent={"grace_s": 1.0},
        delivery={"url": real_gateway.url},
        sensors=[
            {"driver": "ds18b20", "name": "water", "sensor_id": "0000075a3c2e", "interval_s": 10.0,
             "w1_base_dir": str(tree.base), "retry_delay_s": 0.0},
            {"driver": "tasmota", "name": "plug", "topic": "plug_1", "interval_s": 10.0,
             "stale_after_s": 15.0},
            {"driver": "simulator", "name": "boiler", "kind": "boiler", "interval_s": 10.0,
             "dropout": 0.5},
        ],
    )  # fmt: skip
    clock = ManualClock(PAST)
    settings = config.sensors[1].settings
    assert isinstance(settings, TasmotaSettings)
    plug = TasmotaPlug(settings, clock=clock)
    agent = Agent(config=config, clock=clock, drivers={"plug": plug})
    totals = iter([5.000, 5.001, 5.003, 0.000, 0.002])  # kWh; the plug resets mid-minute
    try:
        while clock.t < PAST + 4 * 60 + 2:
            if clock.t == PAST + 60:
                tree.unplug("0000075a3c2e")  # gone for minutes 1 to 3
            total = next(totals, None) if clock.t % 10 == 0 else None
            if total is not None:
                plug.feed(json.dumps({"ENERGY": {"Total": total, "Power": 60}}).encode())
            agent.step(clock.t)
            clock.t += 1
        status = agent.outbox.status()
    finally:
        agent.close()
    assert (status.dead, sum(status.pending.values()), status.acked) == (0, 0, 4)
    payloads = assert_one_entry_per_minute(real_gateway, device, 4)
    by_start = {p["start"]: p["readings"] for p in payloads}
    first, second = (
        by_start[minute_start(PAST * 1000)],
        by_start[minute_start(PAST * 1000 + 60_000)],
    )
    assert first["plug_wh"] == {"unit": "Wh", "sum": 5.0, "n": 5, "missing": 0}  # type: ignore[index]
    assert second["water"] == {
        "unit": "Cel",
        "n": 0,
        "missing": 6,
        "avg": None,  # type: ignore[index]
        "min": None,
        "max": None,
    }
    assert second["plug_wh"]["sum"] == 0.0 and second["plug_wh"]["n"] == 0  # type: ignore[index]


def test_legacy_mode_against_the_real_gateway(
    real_gateway: RealGateway, device: str, make_config: ConfigFactory
) -> None:
    clock = ManualClock(PAST)
    config = make_config(
        device_id=device,
        agent={"grace_s": 1.0},
        delivery={"transport": "legacy", "url": real_gateway.url},
        sensors=[{"driver": "simulator", "name": "house", "kind": "household", "interval_s": 5.0}],
    )
    agent = Agent(config=config, clock=clock)
    try:
        while clock.t < PAST + 3 * 60 + 2:
            agent.step(clock.t)
            clock.t += 1
        status = agent.outbox.status()
        tags = [t for (t,) in agent.store.connection.execute("SELECT log_tag_id FROM outbox")]
    finally:
        agent.close()
    assert (status.dead, status.acked) == (0, 3)
    assert all(t.startswith("c274b5") and len(t) == 70 for t in tags)
    stored = [p["dataToStore"] for p in real_gateway.payloads(device)]
    assert [d["sensor_id"] for d in stored] == ["house_w"] * 3
    assert all(d["community_unique_id"] == COMMUNITY and d["amount"].endswith("W") for d in stored)


def test_kill_9_during_a_flush_against_the_real_gateway(
    real_gateway: RealGateway, device: str, tmp_path: Path
) -> None:
    with HoldingProxy(real_gateway.url).serve() as proxy:
        start = datetime.fromtimestamp(PAST, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        config = tmp_path / "edge.toml"
        config.write_text(toml_text({
            "device_id": device, "community": COMMUNITY, "key_file": "dev.key", "data_dir": "var",
            "agent": {"grace_s": 1.0, "time_scale": 120.0, "sim_start": start},
            "delivery": {"url": proxy.url, "backoff_base_s": 1.0, "backoff_max_s": 10.0},
            "sensor": [{"driver": "simulator", "name": "house", "kind": "household",
                        "interval_s": 5.0}],
        }))  # fmt: skip
        log = (tmp_path / "agent.log").open("ab")
        command = [str(PATIO), "edge", "run", "--config", str(config), "--log-level", "WARNING"]
        proxy.hold = True
        child = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            assert proxy.held.wait(30), "the agent never flushed"
            os.kill(child.pid, signal.SIGKILL)  # committed by the gateway, never acked
            child.wait(10)
            committed = [p["seq"] for p in real_gateway.payloads(device)]
            assert committed
            proxy.hold = False
            proxy.release.set()
            child = subprocess.Popen(command, stdout=log, stderr=log)
            database = tmp_path / "var" / "edge.db"

            def caught_up() -> bool:
                with sqlite3.connect(database, timeout=10) as db:
                    total, waiting = db.execute(
                        "SELECT count(*), count(*) - count(acked_ms) FROM outbox"
                    ).fetchone()
                return bool(total >= len(committed) + 3 and waiting == 0)

            wait_until(caught_up, 30, "the restarted agent to catch up")
            child.send_signal(signal.SIGTERM)
            assert child.wait(10) == 0
        finally:
            if child.poll() is None:
                child.kill()
            log.close()
    with sqlite3.connect(tmp_path / "var" / "edge.db") as db:
        statuses = dict(db.execute("SELECT seq, ack_status FROM outbox").fetchall())
    assert {statuses[seq] for seq in committed} == {"duplicate"}
    assert_one_entry_per_minute(real_gateway, device, len(statuses), agent_was_down=True)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_broker_restart_with_the_real_gateway(
    shared: Shared, device: str, make_config: ConfigFactory, stop_signal: int
) -> None:
    broker, gateway = shared.broker, shared.gateway
    clock = ManualClock(PAST)
    config = make_config(
        device_id=device,
        agent={"grace_s": 1.0},
        delivery={"transport": "mqtt"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "ack_timeout_s": 20.0},
        sensors=[{"driver": "simulator", "name": "house", "kind": "household", "interval_s": 10.0}],
    )
    agent = Agent(config=config, clock=clock)
    transport = agent.transport
    assert isinstance(transport, MqttTransport) and transport.wait_connected(5)

    def drive(until: float) -> int:
        while clock.t < until:
            agent.step(clock.t)
            clock.t += 1
            time.sleep(0.002)
        return pending(agent)

    try:
        drive(PAST + 3 * 60 + 2)
        wait_until(lambda: drive(clock.t + 1) == 0, 20, "the first acks")
        drive(PAST + 5 * 60 + 2)
        broker.stop(stop_signal)
        drive(PAST + 7 * 60 + 2)  # minutes pile up while the broker is down
        assert pending(agent) >= 2
        broker.start()
        wait_until(lambda: drive(clock.t + 1) == 0, 60, "the outbox to drain after the restart")
        total = agent.outbox.status().acked
    finally:
        agent.close()
        if broker.process is None:
            broker.start()
    assert_one_entry_per_minute(gateway, device, total)
    assert total >= 7


@pytest.mark.parametrize("transport", ["http", "mqtt"])
def test_an_agent_with_a_lost_database_continues_after_the_ledger(
    shared: Shared, device: str, make_config: ConfigFactory, transport: str
) -> None:
    """docs/edge-recovery.md: a reinstalled agent (fresh database, same device key) starts
    again at seq 1. Its seq conflicts tell it where the ledger stands; it renumbers what is
    pending from there, and minutes the ledger already holds become dead letters."""
    gateway, broker = shared.gateway, shared.broker
    delivery: dict[str, Any] = (
        {"url": gateway.url} if transport == "http" else {"transport": "mqtt"}
    )
    mqtt = {"mqtt": {"host": "127.0.0.1", "port": broker.port, "ack_timeout_s": 20.0}}
    sensors = [{"driver": "simulator", "name": "house", "kind": "household", "interval_s": 10.0}]

    def run(agent: Agent, clock: ManualClock, until: float, *, flush: bool = True) -> None:
        while clock.t < until:
            if flush:
                agent.step(clock.t)
            else:  # gateway unreachable: minutes pile up in the outbox
                agent.sample(clock.t)
                agent.aggregate(clock.t)
            clock.t += 5

    def drained(agent: Agent, clock: ManualClock) -> bool:
        agent.step(clock.t)
        return pending(agent) == 0

    # The first installation records minutes 0..4 as seq 1..5.
    clock = ManualClock(PAST)
    first = Agent(
        config=make_config(device_id=device, agent={"grace_s": 1.0}, delivery=delivery,
                           sensors=sensors, **mqtt),
        clock=clock,
    )  # fmt: skip
    try:
        run(first, clock, PAST + 5 * 60 + 2)
        wait_until(lambda: drained(first, clock), 30, "the first agent's acks")
    finally:
        first.close()
    before = gateway.payloads(device)
    assert [p["seq"] for p in before] == [1, 2, 3, 4, 5]

    # Reinstalled: a fresh database, the same key. It samples minutes 3..10 before it first
    # reaches the gateway, numbered seq 1..8; minutes 3 and 4 are in the ledger already.
    clock = ManualClock(PAST + 3 * 60)
    second = Agent(
        config=make_config(device_id=device, agent={"grace_s": 1.0}, delivery=delivery,
                           sensors=sensors, data_dir="var-reinstalled", **mqtt),
        clock=clock,
    )  # fmt: skip
    try:
        run(second, clock, PAST + 11 * 60 + 7, flush=False)
        assert pending(second) == 8
        wait_until(lambda: drained(second, clock), 60, "the reinstalled agent to drain")
        status = second.outbox.status()
        dead = second.store.connection.execute("SELECT error FROM dead_letters").fetchall()
    finally:
        second.close()

    payloads = gateway.payloads(device)
    starts = [p["start"] for p in payloads]
    assert len(set(starts)) == len(starts), "a minute is in the ledger twice"
    assert sorted(starts) == [minute_start((PAST + 60 * k) * 1000) for k in range(11)]
    seqs = [int(p["seq"]) for p in payloads]
    assert len(set(seqs)) == len(seqs)
    assert payloads[:5] == before  # the first installation's entries are untouched
    # Minutes 3 and 4 of the reinstalled agent: refused by the minute rule, kept aside.
    assert status.dead == 2 and all("minute" in error for (error,) in dead)
    assert status.acked == 6 and status.next_seq > max(seqs)
