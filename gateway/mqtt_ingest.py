"""MQTT ingest: envelopes from patio/<community>/<device>/entries, acked on .../acks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from ledger.encoding import canonical_json, parse_json
from ledger.errors import LedgerError

log = logging.getLogger("patio.gateway.mqtt")

ENTRIES_SUBSCRIPTION = "patio/+/+/entries"
ACKS_TOPIC = "patio/{community}/{device}/acks"
CONTRACT = "energy_minute"
# One envelope is well under a kilobyte; anything this large is not one.
MAX_PAYLOAD = 256 * 1024


class Submitter(Protocol):
    """The gateway's contract path (gateway.submissions.Submissions)."""

    def submit(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """Run the contract on the envelopes; one result dict per envelope, in order."""
        ...


def _rejected(seq: int | None, error: str) -> dict[str, Any]:
    return {"seq": seq, "status": "rejected", "log_tag_id": None, "error": error}


def _client_error(exc: Exception) -> bool:
    """A refusal caused by the input (LedgerError, or an HTTP-style 4xx error)."""
    if isinstance(exc, LedgerError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500


class MqttIngest:
    """Subscribes to every device's entries topic and answers each message on its acks topic.

    Each message runs through `submissions.submit` (the HTTP route's contract path)
    restricted to the topic's community. Bad input is acked as rejected; a server fault is
    logged and not acked, so the device sends the envelope again later. The client keeps
    a persistent session, so the broker queues entries while the gateway is down, and
    PUBACKs a message only after it was committed and acked (paho acks after on_message).
    """

    def __init__(
        self,
        *,
        submissions: Submitter,
        host: str,
        port: int,
        client_id: str = "patio-gateway",
        keepalive_s: int = 30,
    ) -> None:
        self.submissions = submissions
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self._client: Any = None
        self._connected = threading.Event()

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a broker restart."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed (or timeout); True when connected."""
        return self._connected.wait(timeout)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        client.subscribe(ENTRIES_SUBSCRIPTION, qos=1)
        self._connected.set()
        log.info(
            "MQTT ingest subscribed to %s on %s:%d", ENTRIES_SUBSCRIPTION, self.host, self.port
        )

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()
        log.warning("MQTT ingest disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            answer = self.handle(message.topic, message.payload)
        except Exception:  # the worker must outlive any single message
            log.exception("MQTT ingest failed on a message from %s", message.topic)
            return
        if answer is not None:
            topic, ack = answer
            client.publish(topic, canonical_json(ack), qos=1)

    def handle(self, topic: str, payload: bytes) -> tuple[str, dict[str, Any]] | None:
        """The acks topic and ack for one message; None when no ack can or should be sent."""
        levels = topic.split("/")
        if len(levels) != 4 or levels[0] != "patio" or levels[3] != "entries":
            log.warning("ignoring a message on unexpected topic %r", topic)
            return None
        community, device = levels[1], levels[2]
        acks = ACKS_TOPIC.format(community=community, device=device)
        if len(payload) > MAX_PAYLOAD:
            return acks, _rejected(None, f"message of {len(payload)} bytes is too large")
        try:
            envelope = parse_json(payload, what="envelope")
        except LedgerError as exc:
            return acks, _rejected(None, str(exc))
        body = envelope.get("payload") if isinstance(envelope, dict) else None
        if not isinstance(body, dict):
            return acks, _rejected(None, 'envelope must be {"payload": {...}, "sig": "..."}')
        seq = body.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = None
        if body.get("device_id") != device:
            return acks, _rejected(
                seq, f"payload device_id {body.get('device_id')!r} does not match topic {device!r}"
            )
        try:
            results = self.submissions.submit(CONTRACT, [envelope], community=community)
        except Exception as exc:
            if _client_error(exc):
                return acks, _rejected(seq, str(exc))
            log.exception("submission of %s seq %s failed; not acked, the device retries",
                          device, seq)  # fmt: skip
            return None
        if len(results) != 1 or not isinstance(results[0], dict):
            log.error("submit returned %d results for one envelope; not acked", len(results))
            return None
        result = results[0]
        return acks, {
            "seq": seq,
            "status": result.get("status"),
            "log_tag_id": result.get("log_tag_id"),
            "error": result.get("error"),
        }
