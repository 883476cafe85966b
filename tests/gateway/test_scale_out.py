"""Several gateway processes on one PostgreSQL database: one sealer, one ingest, live events
on every gateway whichever accepted the entry, idempotency across processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.keys import NamedKey
from tests.edge.fakes import Broker
from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_api import envelope, minute, submit
from tests.sse import events
from tests.wait import process_gone, wait_until

SEAL_INTERVAL = 0.5


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{gateway.url}/metrics", timeout=10).text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def leaders(gateways: list[Gateway], role: str = "sealer") -> list[Gateway]:
    """The gateways that say they hold the role."""
    return [g for g in gateways if metric(g, "patio_leader", role=role) == 1]


def kill(gateway: Gateway) -> None:
    """SIGKILL the gateway and its writer: no shutdown, no goodbye to the database."""
    writer = gateway.writer_pid()
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(10)
    os.kill(writer, signal.SIGKILL)
    wait_until(lambda: process_gone(writer), 10, "the writer to die")
    gateway.admin.close()


@pytest.fixture
def three(tmp_path: Path, postgres_url: str) -> Iterator[list[Gateway]]:
    """Three gateways on one PostgreSQL schema, sealing every half second."""
    fast = {"PATIO_SEAL_INTERVAL": str(SEAL_INTERVAL), "PATIO_SEAL_ENTRIES": "100000"}
    started = [start_gateway(tmp_path, database_url=postgres_url, extra_env=fast)]
    try:
        started += [
            start_gateway(tmp_path, database_url=postgres_url, extra_env=fast) for _ in range(2)
        ]
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.stop()


def sizes(gateway: Gateway) -> list[int]:
    reply = gateway.admin.get("/v1/checkpoints", params={"limit": 1000})
    return [c["tree_size"] for c in reply.json()["checkpoints"]]


def test_one_sealer_leads_and_another_takes_over_when_it_is_killed(
    three: list[Gateway],
) -> None:
    wait_until(lambda: len(leaders(three)) == 1, 30, "one sealer to lead")
    # The alert evaluator too runs in one process only (docs/alerts.md).
    wait_until(lambda: len(leaders(three, "alerts")) == 1, 30, "one alert evaluator to lead")
    [leader] = leaders(three)
    key = three[0].device("meter-1", "hoa-1")
    assert submit(leader, envelope(key, minute(key.name, 1)))[0]["status"] == "accepted"
    kill(leader)
    survivors = [g for g in three if g is not leader]
    wait_until(lambda: len(leaders(survivors)) == 1, 30, "a survivor to take the sealer role")
    # Whether the killed process evaluated them or not, one survivor does.
    wait_until(lambda: len(leaders(survivors, "alerts")) == 1, 30, "one evaluator among them")
    results = submit(survivors[0], *(envelope(key, minute(key.name, s)) for s in range(2, 12)))
    assert {r["status"] for r in results} == {"accepted"}
    size = len(survivors[0].export())
    # Nobody asks for a seal: the new leader's timer does it.
    wait_until(lambda: size in sizes(survivors[1]), 30, "the new leader to seal")
    assert len(leaders(survivors)) == 1
    logs = [(g.data_dir / f"gateway-{g.url.rsplit(':', 1)[1]}.log").read_text() for g in survivors]
    assert not any("Traceback" in text or "seal failed" in text for text in logs), logs


def test_the_same_envelope_at_two_gateways_at_once_is_accepted_once(
    three: list[Gateway],
) -> None:
    key = three[0].device("meter-d", "hoa-1")
    barrier = threading.Barrier(2)

    def send(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
        barrier.wait(10)
        return submit(gateway, body)[0]

    with ThreadPoolExecutor(2) as pool:
        for seq in range(1, 31):
            body = envelope(key, minute(key.name, seq))
            targets = [three[seq % 3], three[(seq + 1) % 3]]
            pair = list(pool.map(send, targets, [body] * 2))
            assert sorted(r["status"] for r in pair) == ["accepted", "duplicate"], pair
            assert pair[0]["log_tag_id"] == pair[1]["log_tag_id"]
    exported = three[2].export()
    assert [item["index"] for item in exported] == list(range(len(exported)))
    assert len([i for i in exported if i["entry"]["payload"].get("device_id") == key.name]) == 30


def read_entries(
    gateway: Gateway,
    token: str,
    count: int,
    *,
    last_id: str | None = None,
    ready: threading.Event | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The next `count` entry events of the stream, and the id of the last one."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    found: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{gateway.url}/v1/stream", headers=headers, timeout=60) as reply:
        assert reply.status_code == 200, reply.read()
        for event, event_id, data in events(reply):
            if event == "ready" and ready is not None:
                ready.set()
            last_id = event_id or last_id
            if event == "entry":
                found.append(data)
                if len(found) == count:
                    break
    return found, last_id


def test_stream_clients_of_every_gateway_see_every_entry_once_in_order(
    three: list[Gateway],
) -> None:
    writers, readers = three[0], three[1:]
    keys = [writers.device(f"meter-s{i}", "hoa-1") for i in range(4)]
    token = writers.app_key("read:hoa-1")
    total = 4 * 30
    collected: dict[str, list[dict[str, Any]]] = {}
    opened = [threading.Event() for _ in range(4)]
    failures: list[BaseException] = []

    def follow(name: str, gateway: Gateway, ready: threading.Event, hang_up: bool) -> None:
        try:
            if hang_up:  # a third of the way, hang up and resume from Last-Event-ID
                first, last_id = read_entries(gateway, token, total // 3, ready=ready)
                rest, _ = read_entries(gateway, token, total - len(first), last_id=last_id)
                collected[name] = first + rest
            else:
                collected[name] = read_entries(gateway, token, total, ready=ready)[0]
        except BaseException as exc:
            failures.append(exc)
            ready.set()

    threads = [
        threading.Thread(target=follow, args=(f"r{i}", readers[i % 2], opened[i], i >= 2))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for event in opened:
        assert event.wait(30), "a stream did not open"

    def load(i: int) -> list[str]:
        # Entries accepted by every gateway, the readers' own included.
        target, key = three[i % 3], keys[i % 4]
        results = submit(target, *(envelope(key, minute(key.name, i * 10 + s)) for s in range(3)))
        assert {r["status"] for r in results} == {"accepted"}, results
        return [r["log_tag_id"] for r in results]

    with ThreadPoolExecutor(6) as pool:
        accepted = {tag for batch in pool.map(load, range(total // 3)) for tag in batch}
    for thread in threads:
        thread.join(90)
    assert not failures, failures
    in_log = [
        item["log_tag_id"]
        for item in writers.export()
        if item["entry"]["payload"].get("device_id", "").startswith("meter-s")
    ]
    assert set(in_log) == accepted
    for name, seen in collected.items():
        assert [e["log_tag_id"] for e in seen] == in_log, name
        indexes = [e["index"] for e in seen]
        assert indexes == sorted(set(indexes)), name


def test_the_feed_is_woken_by_another_process_commit(postgres_url: str, tmp_path: Path) -> None:
    """LISTEN/NOTIFY: a commit through another connection wakes the feed before its poll."""
    import asyncio

    from gateway.events import EventFeed
    from ledger.log import Log, Submission

    signer = NamedKey.generate("patio-test")
    other = Log.open(url=postgres_url, signer=signer)
    feed = EventFeed(Log.open(url=postgres_url, signer=signer))

    async def scenario() -> bool:
        feed.start()
        try:
            await asyncio.wait_for(_listening(feed), 30)
            woken = feed.wakeup()  # what a stream idling now waits on
            await asyncio.to_thread(
                other.append, [Submission(contract="note", payload={"n": 1}, sig="x")]
            )
            # Nothing in this process appended or called wake(): only the notification
            # of the other connection's commit can set it (the poll never does).
            await asyncio.wait_for(woken.wait(), 30)
            return True
        finally:
            await feed.stop()

    assert asyncio.run(scenario())
    other.engine.dispose()
    feed.engine.dispose()


async def _listening(feed: Any) -> None:
    import asyncio

    while not feed.listening:
        await asyncio.sleep(0.01)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto started from docker/mosquitto.conf."""
    Broker.require()
    instance = Broker(tmp_path / "mosquitto")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def test_two_gateways_ingest_each_mqtt_message_once(
    tmp_path: Path, postgres_url: str, broker: Broker
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    group = f"g{uuid.uuid4().hex[:8]}"
    gateways: list[Gateway] = []
    try:
        for i in range(2):
            env = {
                "PATIO_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
                "PATIO_MQTT_CLIENT_ID": f"gw-{group}-{i}",
                "PATIO_MQTT_GROUP": group,
            }
            gateways.append(start_gateway(tmp_path, database_url=postgres_url, extra_env=env))
        key = gateways[0].device("meter-q", "hoa-1")
        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{group}")
        device.connect("127.0.0.1", broker.port)
        device.loop_start()
        seqs = itertools.count(1)
        sent = 0

        def accepted(g: Gateway) -> float:
            return metric(
                g, "patio_submissions_total", contract="energy_minute@1", status="accepted"
            )

        def publish(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                seq = next(seqs)
                body = json.dumps(envelope(key, minute(key.name, seq)))
                device.publish("patio/hoa-1/meter-q/entries", body, qos=1).wait_for_publish(10)
                sent += 1

        # Until both have joined the group, one may take everything: publish until each
        # has ingested some, then count.
        def both_ingest() -> bool:
            publish(4)
            return all(accepted(g) > 0 for g in gateways)

        wait_until(both_ingest, 60, "both gateways to ingest from the shared subscription", 0.2)
        publish(40)
        wait_until(lambda: sum(accepted(g) for g in gateways) >= sent, 60, "every message ingested")
        device.loop_stop()
        device.disconnect()
        assert sum(accepted(g) for g in gateways) == sent
        duplicates = [
            metric(g, "patio_submissions_total", contract="energy_minute@1", status="duplicate")
            for g in gateways
        ]
        assert duplicates == [0, 0]
        recorded = [
            i for i in gateways[1].export() if i["entry"]["contract"].startswith("energy_minute")
        ]
        assert sorted(i["entry"]["payload"]["seq"] for i in recorded) == list(range(1, sent + 1))
    finally:
        for gateway in gateways:
            gateway.stop()
