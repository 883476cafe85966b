"""MQTT transport: envelopes QoS 1 to patio/<community>/<device>/entries, acks back by seq."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.errors import DeliveryError
from edge.transports import OutboxItem, Result, result_from

log = logging.getLogger("patio.edge.mqtt")

ENTRIES_TOPIC = "patio/{community}/{device}/entries"
ACKS_TOPIC = "patio/{community}/{device}/acks"
# Unanswered messages are offered again after ack_timeout, doubling up to this factor, so
# a gateway that is down for days does not fill the broker's queue with copies.
MAX_TIMEOUT_FACTOR = 64


@dataclass
class _InFlight:
    published_at: float
    attempts: int
    info: Any  # paho MQTTMessageInfo: is_published() once the broker PUBACKed it


class MqttTransport:
    """Publishes envelopes and collects the gateway's acks; delivery counts only on an ack."""

    contract = "energy_minute"
    synchronous = False

    def __init__(
        self,
        *,
        host: str,
        port: int,
        community: str,
        device_id: str,
        client_id: str | None = None,
        keepalive_s: int = 30,
        ack_timeout_s: float = 30.0,
        window: int = 100,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.batch_size = window
        self.entries_topic = ENTRIES_TOPIC.format(community=community, device=device_id)
        self.acks_topic = ACKS_TOPIC.format(community=community, device=device_id)
        self._ack_timeout_s = ack_timeout_s
        self._acks: queue.Queue[Result] = queue.Queue()
        self._in_flight: dict[int, _InFlight] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._resumed = threading.Event()
        # A persistent session (clean_session False, fixed client id): acks published
        # while this device is offline wait for it at the broker.
        self._client: Any = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"patio-edge-{device_id}",
            clean_session=False,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.connect_async(host, port, keepalive=keepalive_s)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (or timeout); True when connected."""
        return self._connected.wait(timeout)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        client.subscribe(self.acks_topic, qos=1)
        with self._lock:
            # Whatever the broker never PUBACKed may be lost with the old connection.
            for seq in [s for s, f in self._in_flight.items() if not f.info.is_published()]:
                del self._in_flight[seq]
        self._connected.set()
        self._resumed.set()
        log.info("connected to the broker; acks on %s", self.acks_topic)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()
        log.warning("disconnected from the broker (%s); paho reconnects", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            ack = json.loads(message.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("ignoring an ack that is not JSON on %s", message.topic)
            return
        seq = ack.get("seq") if isinstance(ack, dict) else None
        result = result_from(seq, ack) if isinstance(seq, int) and isinstance(ack, dict) else None
        if result is None:
            log.warning("ignoring a malformed ack on %s: %.200r", message.topic, message.payload)
            return
        with self._lock:
            self._in_flight.pop(result.seq, None)
        self._acks.put(result)

    def exchange(self, items: Sequence[OutboxItem], now: float) -> list[Result]:
        """Publish the items not in flight (or whose ack is overdue); return the acks so far."""
        acks = self._drain()
        answered = {a.seq for a in acks}
        if not self._connected.is_set():
            raise DeliveryError("not connected to the MQTT broker", results=acks)
        for item in items:
            if item.seq in answered:
                continue
            with self._lock:
                flight = self._in_flight.get(item.seq)
            if flight is not None:
                factor = min(2 ** (flight.attempts - 1), MAX_TIMEOUT_FACTOR)
                if now - flight.published_at < self._ack_timeout_s * factor:
                    continue
            info = self._client.publish(self.entries_topic, item.body, qos=1)
            if info.rc != 0:
                raise DeliveryError(f"publish failed (paho rc {info.rc})", results=acks)
            with self._lock:
                attempts = flight.attempts + 1 if flight is not None else 1
                self._in_flight[item.seq] = _InFlight(now, attempts, info)
        return acks

    def _drain(self) -> list[Result]:
        acks = []
        while True:
            try:
                acks.append(self._acks.get_nowait())
            except queue.Empty:
                return acks

    @property
    def in_flight(self) -> int:
        """How many published messages await an ack."""
        with self._lock:
            return len(self._in_flight)

    @property
    def unconfirmed(self) -> int:
        """How many published messages the broker has not PUBACKed yet."""
        with self._lock:
            return sum(1 for f in self._in_flight.values() if not f.info.is_published())

    def resumed(self) -> bool:
        """True once after each (re)connection."""
        if self._resumed.is_set():
            self._resumed.clear()
            return True
        return False

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
