"""Tasmota plugs: telemetry parsing, and a plug publishing through a real Mosquitto."""

from __future__ import annotations

import json

import pytest

from edge.drivers import Sample
from edge.drivers.tasmota import Settings, TasmotaPlug, parse_telemetry
from tests.edge.conftest import ConfigFactory
from tests.edge.fakes import Broker, ManualClock
from tests.wait import wait_until

# The Nous A1T message from the Block of Energy seed (tele/<topic>/SENSOR).
NOUS_A1T = {
    "Time": "2025-08-21T18:23:28",
    "Uptime": "0T01:00:00",
    "UptimeSec": 3600,
    "ENERGY": {
        "TotalStartTime": "2025-08-21T00:00:00",
        "Total": 10.017,
        "Yesterday": 6.87,
        "Today": 0.017,
        "Period": 14,
        "Power": 203,
        "ApparentPower": 207,
        "ReactivePower": 40,
        "Factor": 0.98,
        "Voltage": 223,
        "Current": 0.93,
    },
}


def test_telemetry_gives_power_and_the_total_in_wh() -> None:
    assert parse_telemetry(NOUS_A1T) == (203.0, 10017.0)
    assert parse_telemetry({"ENERGY": {"Power": [100, 23.5], "Total": 1}}) == (123.5, 1000.0)
    assert parse_telemetry({"ENERGY": {"Power": "n/a"}}) == (None, None)
    assert parse_telemetry({"DS18B20": {"Temperature": 21}}) == (None, None)


def plug(make_config: ConfigFactory, broker_port: int, clock: ManualClock) -> TasmotaPlug:
    """A plug driver opened from edge.toml, subscribed through the broker."""
    config = make_config(
        mqtt={"host": "127.0.0.1", "port": broker_port},
        sensors=[
            {
                "driver": "tasmota",
                "name": "washer",
                "topic": "tasmota_5C1A2B",
                "stale_after_s": 30.0,
            }
        ],
    )
    settings = config.sensors[0].settings
    assert isinstance(settings, Settings)
    driver = settings.open(clock)
    assert isinstance(driver, TasmotaPlug)
    return driver


def test_a_plug_publishing_through_mosquitto(
    make_config: ConfigFactory, broker: Broker, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    driver = plug(make_config, broker.port, clock)
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tasmota_5C1A2B")
    device.connect("127.0.0.1", broker.port)
    device.loop_start()
    try:
        assert driver.read(clock.now()) == []
        # The driver subscribes in the background: publish until it hears one message.
        received: list[Sample] = []

        def heard() -> bool:
            device.publish("tele/tasmota_5C1A2B/SENSOR", json.dumps(NOUS_A1T)).wait_for_publish(5)
            received.extend(driver.read(clock.now()))
            return bool(received)

        wait_until(heard, 10, "the plug's telemetry", interval=0.05)
        assert received[:2] == [
            Sample("washer_w", clock.now(), 203.0),
            Sample("washer_wh", clock.now(), 10017.0),
        ]
        device.publish("tele/tasmota_5C1A2B/SENSOR", b"garbage").wait_for_publish(5)
        device.publish("tele/other_plug/SENSOR", json.dumps(NOUS_A1T)).wait_for_publish(5)
        # The refusal is the event: one topic arrives in order, so what was published before
        # the garbage has arrived too, and the read drains it at the clock's "now".
        wait_until(lambda: "sent a message that is not JSON" in caplog.text, 10, "the garbage")
        driver.read(clock.now())
        clock.t += 29
        assert driver.read(clock.now()) == []  # nothing usable, not yet stale
        clock.t += 1
        assert driver.read(clock.now()) == [
            Sample("washer_w", clock.now(), None),
            Sample("washer_wh", clock.now(), None),
        ]
        clock.t += 10
        assert driver.read(clock.now()) == []  # one missing pair per stale period
    finally:
        device.disconnect()
        device.loop_stop()
        driver.close()
