"""MQTT delivery through a real Mosquitto: transport, gateway-side ingest, broker restarts."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.database import Store
from edge.outbox import Outbox
from edge.transports.mqtt import MqttTransport
from gateway.mqtt_ingest import Message, MqttIngest
from ledger.encoding import canonical_json
from ledger.errors import FormatError
from ledger.keys import NamedKey
from tests.edge.conftest import COMMUNITY, DEVICE, T0, ConfigFactory
from tests.edge.fakes import Broker, FakeGateway, LedgerSubmissions, ManualClock
from tests.wait import wait_until

READINGS = {"t": {"unit": "Cel", "n": 1, "missing": 0, "avg": 20.0, "min": 20.0, "max": 20.0}}
ACKS = f"patio/{COMMUNITY}/{DEVICE}/acks"
ENTRIES = f"patio/{COMMUNITY}/{DEVICE}/entries"


@pytest.fixture
def submissions(device_key: NamedKey) -> LedgerSubmissions:
    """The gateway's contract path, in memory, with dev-1 registered in hoa-1."""
    return LedgerSubmissions(
        FakeGateway(keys={DEVICE: device_key.public_key_b64}), {DEVICE: COMMUNITY}
    )


def start_ingest(broker: Broker, submissions: LedgerSubmissions) -> MqttIngest:
    """A running MqttIngest, subscribed."""
    ingest = MqttIngest(submissions=submissions, host="127.0.0.1", port=broker.port)
    ingest.start()
    assert ingest.wait_connected(5), "ingest did not connect"
    return ingest


def connect(broker: Broker, **options: Any) -> MqttTransport:
    """A connected edge transport."""
    transport = MqttTransport(
        host="127.0.0.1", port=broker.port, community=COMMUNITY, device_id=DEVICE, **options
    )
    assert transport.wait_connected(5), "edge transport did not connect"
    return transport


@pytest.fixture
def outbox(tmp_path: Path, device_key: NamedKey) -> Iterator[Outbox]:
    """An outbox on a fresh database."""
    store = Store.open(tmp_path / "edge.db")
    yield Outbox(store=store, key=device_key, device_id=DEVICE, rng=random.Random(1))
    store.close()


def fill(outbox: Outbox, count: int) -> None:
    """Add `count` consecutive minutes."""
    with outbox.store.transaction():
        for k in range(count):
            outbox.add_minute(int(T0 * 1000) + 60_000 * k, READINGS)


def pending(outbox: Outbox) -> int:
    """Items still waiting for an ack."""
    return sum(outbox.status().pending.values())


class AckListener:
    """A plain MQTT client that records the acks of dev-1."""

    def __init__(self, broker: Broker) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.acks: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-listener")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(ACKS, qos=1)
        self.client.on_subscribe = lambda c, u, m, r, p: self.ready.set()
        self.client.on_message = lambda c, u, m: self.acks.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish as a device would."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


class Barrier:
    """A marker sent through the broker and the ingest, instead of waiting for "nothing new".

    Mosquitto hands one subscriber the messages it took in the order it took them, and the
    ingest acks in message order: once a marker's ack is back, every message the broker
    held before the marker has been handled.
    """

    DEVICE = "barrier"

    def __init__(self, broker: Broker) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.answered: set[int] = set()
        self.condition = threading.Condition()
        self.marks = 0
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-barrier")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(
            f"patio/{COMMUNITY}/{self.DEVICE}/acks", qos=1
        )
        self.client.on_subscribe = lambda c, u, m, r, p: subscribed.set()
        self.client.on_message = self._on_ack
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(5), "the barrier's SUBACK"

    def _on_ack(self, client: Any, userdata: Any, message: Any) -> None:
        with self.condition:
            self.answered.add(json.loads(message.payload)["seq"])
            self.condition.notify_all()

    def _answered(self, mark: int, timeout: float) -> bool:
        with self.condition:
            return self.condition.wait_for(lambda: mark in self.answered, timeout)

    def cross(self, timeout: float = 30, retry_after: float = 2) -> None:
        """Send markers until one comes back acked (a full broker queue drops a marker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.marks += 1
            mark = self.marks
            # Its device id does not match the topic: the ingest refuses it, acking its seq.
            body = {"payload": {"device_id": "not-the-barrier", "seq": mark}, "sig": ""}
            topic = f"patio/{COMMUNITY}/{self.DEVICE}/entries"
            self.client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
            if self._answered(mark, min(retry_after, max(0.0, deadline - time.monotonic()))):
                return
        pytest.fail(f"no marker came back through the broker and the ingest in {timeout} s")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def test_delivery_counts_only_on_the_gateways_ack(
    broker: Broker, outbox: Outbox, submissions: LedgerSubmissions
) -> None:
    transport = connect(broker, ack_timeout_s=30.0)
    try:
        fill(outbox, 5)
        outbox.flush(transport, T0)  # published; no gateway is listening yet
        wait_until(lambda: transport.unconfirmed == 0, 5, "PUBACKs from the broker")
        outbox.flush(transport, T0 + 1)
        assert pending(outbox) == 5 and transport.in_flight == 5
        ingest = start_ingest(broker, submissions)
        barrier = Barrier(broker)
        try:
            outbox.flush(transport, T0 + 10)  # the ack timeout has not passed: nothing resent
            wait_until(lambda: transport.unconfirmed == 0, 5, "PUBACKs of anything resent")
            barrier.cross()  # whatever the flush published has reached the ingest
            assert submissions.envelopes == 0 and pending(outbox) == 5
            outbox.flush(transport, T0 + 31.0)  # overdue: offered again, now the gateway answers
            wait_until(lambda: submissions.envelopes == 5, 10, "the five resent envelopes")
            wait_until(lambda: transport.in_flight == 0, 10, "their five acks")
            outbox.flush(transport, T0 + 32.0)  # takes the acks in
            assert pending(outbox) == 0
        finally:
            barrier.close()
            ingest.stop()
    finally:
        transport.close()
    assert sorted(s for _, s in submissions.gateway.entries) == [1, 2, 3, 4, 5]
    statuses = outbox.store.connection.execute("SELECT DISTINCT ack_status FROM outbox")
    assert statuses.fetchall() == [("accepted",)]


@pytest.mark.parametrize(
    ("overrides", "everything_queued"),
    [({}, True), ({"max_queued_messages": "1000"}, False)],
    ids=["project-config", "mosquitto-default-limit"],
)
def test_the_broker_queues_a_burst_for_an_offline_gateway(
    tmp_path: Path,
    outbox: Outbox,
    submissions: LedgerSubmissions,
    overrides: dict[str, str],
    everything_queued: bool,
) -> None:
    Broker.require()
    broker = Broker(tmp_path / "queue-broker", overrides)
    broker.start()
    try:
        start_ingest(broker, submissions).stop()  # its persistent session stays subscribed
        transport = connect(broker, window=2000, ack_timeout_s=3600.0)
        fill(outbox, 1500)
        outbox.flush(transport, T0)
        wait_until(lambda: transport.unconfirmed == 0, 10, "PUBACKs for the burst")
        barrier = Barrier(broker)
        ingest = start_ingest(broker, submissions)
        barrier.cross()  # the broker has handed over everything it queued
        barrier.close()
        assert submissions.calls < submissions.envelopes / 10  # committed in batches
        ingest.stop()
        transport.close()
    finally:
        broker.stop()
    if everything_queued:
        assert submissions.envelopes == 1500
    else:
        # Why docker/mosquitto.conf lifts the limit: the default silently drops QoS 1
        # messages beyond 1000 queued (plus those in flight) for an offline client.
        assert 1000 <= submissions.envelopes < 1500


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_broker_restart_loses_and_duplicates_nothing(
    broker: Broker,
    make_config: ConfigFactory,
    submissions: LedgerSubmissions,
    clock: ManualClock,
    stop_signal: int,
) -> None:
    config = make_config(
        agent={"grace_s": 1.0},
        delivery={"transport": "mqtt"},
        mqtt={"host": "127.0.0.1", "port": broker.port, "ack_timeout_s": 20.0},
        sensors=[{"driver": "simulator", "name": "house", "kind": "household", "interval_s": 10.0}],
    )
    ingest = start_ingest(broker, submissions)
    agent = Agent(config=config, clock=clock)
    transport = agent.transport
    assert isinstance(transport, MqttTransport) and transport.wait_connected(5)

    def drive(until: float, *, acked: bool) -> None:
        """Step the agent one simulated second at a time; with `acked` (the gateway is up),
        what a step published is acked before the next step, so no ack timeout passes."""
        while clock.t < until:
            agent.step(clock.t)
            clock.t += 1
            if acked:
                wait_until(lambda: transport.in_flight == 0, 10, "the gateway's acks")

    def recorded() -> int:
        return len(submissions.gateway.payloads(DEVICE))

    try:
        drive(T0 + 3 * 60 + 2, acked=True)  # minutes 0-2 delivered and acked
        assert recorded() == 3 and transport.in_flight == 0
        ingest.stop()  # the gateway's side goes away; its session stays at the broker
        drive(T0 + 5 * 60 + 2, acked=False)  # minutes 3-4: published, PUBACKed, queued
        wait_until(lambda: transport.unconfirmed == 0, 5, "PUBACKs")
        assert transport.in_flight == 2 and recorded() == 3
        # SIGTERM: the broker saves its queue and hands it over after the restart.
        # SIGKILL: the queue is lost; the agent offers minutes 3-4 again after its ack timeout.
        broker.stop(stop_signal)
        wait_until(lambda: not transport.connected, 10, "the agent to see the broker gone")
        drive(T0 + 7 * 60 + 2, acked=False)  # minutes 5-6 pile up while the broker is down
        assert agent.outbox.failures > 0  # "not connected to the MQTT broker", backing off
        broker.start()
        ingest = start_ingest(broker, submissions)

        # Acks now travel while simulated time runs on (20 ms a second): a slow one brings
        # a resend, which the ledger answers as a duplicate.
        def drained() -> bool:
            drive(clock.t + 1, acked=False)
            return pending(agent.outbox) == 0

        wait_until(drained, 60, "the outbox to drain after the restart")
    finally:
        agent.close()
        ingest.stop()
    payloads = submissions.gateway.payloads(DEVICE)
    starts = sorted(p["start"] for p in payloads)
    assert starts == [f"2026-11-22T10:{m:02d}:00Z" for m in range(len(starts))]
    assert len(starts) >= 7
    assert sorted(p["seq"] for p in payloads) == list(range(1, len(starts) + 1))
    assert submissions.gateway.conflicts == []


def test_bad_input_is_acked_as_rejected_and_the_worker_carries_on(
    broker: Broker, submissions: LedgerSubmissions, device_key: NamedKey
) -> None:
    ingest = start_ingest(broker, submissions)
    listener = AckListener(broker)
    try:
        payload = {
            "device_id": DEVICE,
            "seq": 7,
            "start": "2026-11-22T10:00:00Z",
            "period_s": 60,
            "readings": READINGS,
        }
        good = canonical_json({"payload": payload, "sig": device_key.sign_payload(payload)})
        listener.publish(ENTRIES, b"{not json")
        listener.publish(ENTRIES, b'{"payload": [1]}')
        listener.publish(f"patio/{COMMUNITY}/someone-else/entries", good)  # acked there, not here
        listener.publish(f"patio/hoa-2/{DEVICE}/entries", good)  # wrong community
        forged = dict(payload, seq=8)
        listener.publish(
            ENTRIES, canonical_json({"payload": forged, "sig": device_key.sign_payload(payload)})
        )
        listener.publish(ENTRIES, good)
        listener.publish(ENTRIES, good)
        wait_until(lambda: len(listener.acks) == 5, 5, "five acks")
    finally:
        listener.close()
        ingest.stop()
    bad_json, not_envelope, forged_ack, accepted, duplicate = listener.acks
    assert bad_json["seq"] is None and bad_json["status"] == "rejected"
    assert "not valid JSON" in bad_json["error"]
    assert not_envelope == {
        "seq": None,
        "status": "rejected",
        "log_tag_id": None,
        "error": 'envelope must be {"payload": {...}, "sig": "..."}',
    }
    assert forged_ack["seq"] == 8 and forged_ack["status"] == "rejected"
    assert accepted["seq"] == 7 and accepted["status"] == "accepted"
    assert duplicate == dict(accepted, status="duplicate")
    assert len(submissions.gateway.entries) == 1


class _Refusal(Exception):
    status_code = 422


@pytest.mark.parametrize(
    ("fault", "acked"),
    [
        (FormatError("readings: bad unit"), True),
        (_Refusal("schema"), True),
        (RuntimeError("database is down"), False),
    ],
    ids=["ledger-error", "http-4xx", "server-fault"],
)
def test_refusals_are_acked_but_server_faults_are_left_for_a_retry(
    submissions: LedgerSubmissions, device_key: NamedKey, fault: Exception, acked: bool
) -> None:
    ingest = MqttIngest(submissions=submissions, host="127.0.0.1", port=1)
    payload = {
        "device_id": DEVICE,
        "seq": 3,
        "start": "2026-11-22T10:00:00Z",
        "period_s": 60,
        "readings": READINGS,
    }
    envelope = canonical_json({"payload": payload, "sig": device_key.sign_payload(payload)})
    submissions.fault = fault
    answer = ingest.handle(ENTRIES, envelope)
    if not acked:
        assert answer is None  # no ack: the device offers it again after its ack timeout
        return
    assert answer == (
        ACKS,
        {"seq": 3, "status": "rejected", "log_tag_id": None, "error": str(fault)},
    )


def test_a_foreign_topic_gets_no_ack(submissions: LedgerSubmissions) -> None:
    ingest = MqttIngest(submissions=submissions, host="127.0.0.1", port=1)
    assert ingest.handle("patio/hoa-1/dev-1/entries/extra", b"{}") is None
    assert ingest.handle("tele/plug/SENSOR", b"{}") is None
    assert submissions.envelopes == 0


def _envelope(key: NamedKey, seq: int) -> bytes:
    payload = {
        "device_id": DEVICE,
        "seq": seq,
        "start": "2026-11-22T10:00:00Z",
        "period_s": 60,
        "readings": READINGS,
    }
    return canonical_json({"payload": payload, "sig": key.sign_payload(payload)})


def test_a_batch_is_one_submit_per_community_in_message_order(
    submissions: LedgerSubmissions, device_key: NamedKey
) -> None:
    ingest = MqttIngest(submissions=submissions, host="127.0.0.1", port=1)
    answers = ingest.handle_batch(
        [
            Message(ENTRIES, _envelope(device_key, 1)),
            Message(ENTRIES, b"junk"),
            Message(ENTRIES, _envelope(device_key, 2)),
            Message(f"patio/hoa-2/{DEVICE}/entries", _envelope(device_key, 3)),
        ]
    )
    assert submissions.calls == 2  # hoa-1 (seqs 1, 2) and hoa-2 (seq 3)
    assert [a[0] for a in answers if a] == [ACKS, ACKS, ACKS, f"patio/hoa-2/{DEVICE}/acks"]
    assert [(a[1]["seq"], a[1]["status"]) for a in answers if a] == [
        (1, "accepted"),
        (None, "rejected"),
        (2, "accepted"),
        (3, "rejected"),
    ]


def test_a_failing_batch_is_retried_one_envelope_at_a_time(
    submissions: LedgerSubmissions, device_key: NamedKey
) -> None:
    class OnlySingles:
        def submit(self, contract: str, envelopes: Any, *, community: str | None = None) -> Any:
            if len(envelopes) > 1:
                raise RuntimeError("batch too large for a flaky store")
            if envelopes[0]["payload"]["seq"] == 2:
                raise FormatError("readings: bad")
            return submissions.submit(contract, envelopes, community=community)

    ingest = MqttIngest(submissions=OnlySingles(), host="127.0.0.1", port=1)
    answers = ingest.handle_batch([Message(ENTRIES, _envelope(device_key, s)) for s in (1, 2, 3)])
    assert [(a[1]["seq"], a[1]["status"]) for a in answers if a] == [
        (1, "accepted"),
        (2, "rejected"),
        (3, "accepted"),
    ]
