"""Tasmota smart plugs over MQTT (paho-mqtt 2): power and the ENERGY.Total counter."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.config import TOPIC_LEVEL
from edge.drivers import Channel, Context, Sample

if TYPE_CHECKING:
    from edge.clock import Clock
    from edge.config import Section

log = logging.getLogger("patio.edge.tasmota")

# Tasmota publishes telemetry every TelePeriod seconds on tele/<topic>/SENSOR
# (tasmota.github.io/docs/MQTT/); ENERGY.Total is in kWh, ENERGY.Power in W.
TELE_TOPIC = "tele/{topic}/SENSOR"
# Buffered messages beyond this are dropped (oldest kept): a stalled agent must not grow.
MAX_BUFFERED = 10_000


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Options of one plug."""

    name: str
    topic: str
    host: str
    port: int
    stale_after_s: float

    def channels(self) -> list[Channel]:
        """Active power in W and the energy counter in Wh."""
        return [
            Channel(f"{self.name}_w", "gauge", "W"),
            Channel(f"{self.name}_wh", "counter", "Wh"),
        ]

    def open(self, clock: Clock) -> TasmotaPlug:
        """Subscribe to the plug's telemetry."""
        plug = TasmotaPlug(self, clock=clock)
        plug.start()
        return plug


def parse(section: Section, context: Context) -> Settings:
    """Validate the Tasmota options; the broker defaults to [mqtt]."""
    return Settings(
        name=context.name,
        topic=section.text("topic", pattern=TOPIC_LEVEL),
        host=section.text("host", context.mqtt.host),
        port=section.integer("port", context.mqtt.port, minimum=1, maximum=65535),
        stale_after_s=section.number("stale_after_s", 30.0, above=0),
    )


def parse_telemetry(message: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(power in W, energy total in Wh) from a tele/.../SENSOR message; None when absent."""
    energy = message.get("ENERGY")
    if not isinstance(energy, Mapping):
        return None, None
    power = energy.get("Power")
    # Multi-channel devices report one value per relay.
    if isinstance(power, list) and all(_is_number(p) for p in power):
        power = sum(power)
    total = energy.get("Total")
    return (
        float(power) if isinstance(power, int | float) and _is_number(power) else None,
        float(total) * 1000.0 if isinstance(total, int | float) and _is_number(total) else None,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class TasmotaPlug:
    """Buffers each telemetry message with its arrival time; `read` drains the buffer."""

    def __init__(self, settings: Settings, *, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: list[Sample] = []
        self._heard_at: float | None = None
        self._missing_at: float | None = None
        self._client: Any = None

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a broker restart."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"patio-tasmota-{self.settings.name}",
            clean_session=True,  # telemetry is a stream of gauges: no backlog wanted
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        client.loop_start()
        self._client = client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(TELE_TOPIC.format(topic=self.settings.topic), qos=0)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.feed(message.payload)

    def feed(self, payload: bytes) -> None:
        """Take one telemetry message (the MQTT callback calls this)."""
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("plug %s sent a message that is not JSON", self.settings.name)
            return
        if not isinstance(document, Mapping):
            return
        power, total = parse_telemetry(document)
        if power is None and total is None:
            return
        now = self._clock.now()
        name = self.settings.name
        with self._lock:
            self._heard_at = now
            if len(self._buffer) < MAX_BUFFERED:
                self._buffer += [Sample.of(f"{name}_w", now, power),
                                 Sample.of(f"{name}_wh", now, total)]  # fmt: skip

    def read(self, now: float) -> list[Sample]:
        """Telemetry received since the last read; missing samples while the plug is quiet."""
        with self._lock:
            samples, self._buffer = self._buffer, []
            if self._heard_at is None:
                self._heard_at = now  # nothing heard yet: the silence counts from here
            heard = self._heard_at
        if samples:
            return samples
        reference = heard if self._missing_at is None else max(heard, self._missing_at)
        if now - reference < self.settings.stale_after_s:
            return []
        self._missing_at = now
        name = self.settings.name
        return [Sample(f"{name}_w", now, None), Sample(f"{name}_wh", now, None)]

    def close(self) -> None:
        """Disconnect from the broker."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
