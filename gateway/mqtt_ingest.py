"""MQTT ingest: envelopes from patio/<community>/<device>/entries, acked on .../acks."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.encoding import canonical_json, parse_json
from ledger.errors import LedgerError

log = logging.getLogger("patio.gateway.mqtt")

ENTRIES_TOPICS = "patio/+/+/entries"
# A shared subscription (MQTT 5, also honoured by Mosquitto for 3.1.1 clients): the broker
# hands each message to one member of the group, so N gateways ingest it once, not N times.
SHARED_SUBSCRIPTION = "$share/{group}/" + ENTRIES_TOPICS
ACKS_TOPIC = "patio/{community}/{device}/acks"
CONTRACT = "energy_minute"
# One envelope is well under a kilobyte; anything this large is not one.
MAX_PAYLOAD = 256 * 1024
# Messages handed to one submit call (one group commit). The broker's
# max_inflight_messages (docker/mosquitto.conf) bounds how many arrive unacknowledged.
MAX_BATCH = 500

Ack = tuple[str, dict[str, Any]]


class Submitter(Protocol):
    """The gateway's contract path (gateway.submissions.Submissions)."""

    def submit(
        self, contract: str, envelopes: Sequence[Any], *, community: str | None = None
    ) -> list[dict[str, Any]]:
        """Run the contract on the envelopes; one result dict per envelope, in order."""
        ...


@dataclass(frozen=True)
class Message:
    """One received MQTT message."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1


def _rejected(seq: int | None, error: str) -> dict[str, Any]:
    return {"seq": seq, "status": "rejected", "log_tag_id": None, "error": error}


def _client_error(exc: Exception) -> bool:
    """A refusal caused by the input (LedgerError, or an HTTP-style 4xx error)."""
    if isinstance(exc, LedgerError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500


@dataclass
class _Admitted:
    """A message that passed the topic and envelope checks, waiting for the contract."""

    slot: int
    acks: str
    community: str
    seq: int | None
    envelope: dict[str, Any]


class MqttIngest:
    """Subscribes to every device's entries topic and answers each message on its acks topic.

    Every gateway of a deployment joins one shared subscription, each with a client id of
    its own: the broker spreads the messages over them, each delivered to one.

    Messages go through `submissions.submit` (the HTTP route's contract path), restricted
    to the topic's community, in batches: what arrived together is committed together.
    Bad input is acked as rejected; a server fault is logged and not acked, so the device
    sends the envelope again after its ack timeout. The client keeps a persistent session,
    so the broker queues entries while the gateway is down, and PUBACKs each message only
    after its batch was committed and acked (manual acks).
    """

    def __init__(
        self,
        *,
        submissions: Submitter,
        host: str,
        port: int,
        client_id: str = "patio-gateway",
        group: str = "patio",
        keepalive_s: int = 30,
    ) -> None:
        self.submissions = submissions
        self.host = host
        self.port = port
        self.client_id = client_id
        self.subscription = SHARED_SUBSCRIPTION.format(group=group)
        self.keepalive_s = keepalive_s
        self._client: Any = None
        self._connected = threading.Event()
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a broker restart."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client = client
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        self._worker.start()
        client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        client.loop_start()

    def stop(self) -> None:
        """Disconnect, finish the messages already taken, and stop the threads."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._worker is not None:
            self._inbox.put(None)
            self._worker.join(30)
            self._worker = None
        self._client = None
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed (or timeout); True when connected."""
        return self._connected.wait(timeout)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        client.subscribe(self.subscription, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        # Subscribed once the broker says so (SUBACK): a device's message published before
        # that, on a new session, would reach no one.
        if any(reason.is_failure for reason in reasons):
            log.warning("broker refused the subscription to %s: %s", self.subscription, reasons)
            return
        self._connected.set()
        log.info("MQTT ingest subscribed to %s on %s:%d", self.subscription, self.host, self.port)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()
        log.warning("MQTT ingest disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._inbox.put(Message(message.topic, bytes(message.payload), message.mid, message.qos))

    def _work(self) -> None:
        """Take what has arrived (up to MAX_BATCH), commit it as one batch, ack, PUBACK."""
        while True:
            first = self._inbox.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._inbox.put(None)  # finish this batch, then stop
                    break
                batch.append(more)
            try:
                answers = self.handle_batch(batch)
            except Exception:  # the worker must outlive any batch
                log.exception("MQTT ingest failed on a batch of %d messages", len(batch))
                answers = [None] * len(batch)
            client = self._client
            if client is None:
                continue
            for message, answer in zip(batch, answers, strict=True):
                if answer is not None:
                    topic, ack = answer
                    client.publish(topic, canonical_json(ack), qos=1)
                # PUBACK even when unanswered: the device's ack timeout brings it back,
                # and an unacknowledged message would block the broker's in-flight window.
                client.ack(message.mid, message.qos)

    def handle(self, topic: str, payload: bytes) -> Ack | None:
        """The acks topic and ack for one message; None when no ack can or should be sent."""
        return self.handle_batch([Message(topic, payload)])[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[Ack | None]:
        """One answer per message, in order; valid envelopes share one submit per community."""
        answers: list[Ack | None] = [None] * len(messages)
        groups: dict[str, list[_Admitted]] = {}
        for slot, message in enumerate(messages):
            checked = self._check(slot, message)
            if isinstance(checked, _Admitted):
                groups.setdefault(checked.community, []).append(checked)
            else:
                answers[slot] = checked
        for community, admitted in groups.items():
            for item, result in zip(admitted, self._submit(community, admitted), strict=True):
                if result is not None:
                    answers[item.slot] = (item.acks, {"seq": item.seq, **result})
        return answers

    def _check(self, slot: int, message: Message) -> _Admitted | Ack | None:
        levels = message.topic.split("/")
        if len(levels) != 4 or levels[0] != "patio" or levels[3] != "entries":
            log.warning("ignoring a message on unexpected topic %r", message.topic)
            return None
        community, device = levels[1], levels[2]
        acks = ACKS_TOPIC.format(community=community, device=device)
        if len(message.payload) > MAX_PAYLOAD:
            return acks, _rejected(None, f"message of {len(message.payload)} bytes is too large")
        try:
            envelope = parse_json(message.payload, what="envelope")
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
        return _Admitted(slot, acks, community, seq, envelope)

    def _submit(self, community: str, admitted: list[_Admitted]) -> list[dict[str, Any] | None]:
        """Results for a community's envelopes; a failed batch is retried one by one."""
        envelopes = [item.envelope for item in admitted]
        try:
            results = self.submissions.submit(CONTRACT, envelopes, community=community)
        except Exception as exc:
            if len(admitted) > 1:
                return [r for item in admitted for r in self._submit(community, [item])]
            if _client_error(exc):
                return [{"status": "rejected", "log_tag_id": None, "error": str(exc)}]
            log.exception("submission of seq %s failed; not acked, the device retries",
                          admitted[0].seq)  # fmt: skip
            return [None]
        if len(results) != len(admitted) or not all(isinstance(r, dict) for r in results):
            log.error("submit returned %d results for %d envelopes; not acked",
                      len(results), len(admitted))  # fmt: skip
            return [None] * len(admitted)
        # A conflict's rule and where the device stands travel too (docs/edge-recovery.md).
        kept = ("status", "log_tag_id", "error", "rule", "last_seq", "last_start")
        return [{name: r[name] for name in kept if name in r} for r in results]
