"""Notifications: grouping per community, repeats, acknowledgment, silences, quiet hours,
retries while a channel is down, ntfy, and each sent notification on the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.alerts.evaluator import AlertError, iso
from gateway.alerts.tables import alert_deliveries, alert_events, alert_silences
from ledger.verify import verify_bundle
from tests.alerts.receivers import HttpReceiver, when
from tests.alerts.site import COMMUNITY, T0, Site, temperature
from tests.alerts.test_rules import sent, webhook
from tests.gateway.server import patio

COLD = {"name": "cold", "condition": {"kind": "threshold", "sensor": "t", "op": "<", "value": 5}}


def minute(n: int) -> int:
    return T0 + 60 * n


def cold_everywhere(site: Site, devices: list[str], n: int, value: float = 1.0) -> None:
    site.clock.now = minute(n + 1)
    for device in devices:
        site.reading(device, minute(n), {"t": temperature(value)})
    site.evaluator.evaluate()


def deliveries(site: Site) -> list[tuple[str, int, str | None]]:
    with site.log.engine.connect() as conn:
        return [
            (row.status, row.attempts, row.log_tag_id)
            for row in conn.execute(select(alert_deliveries).order_by(alert_deliveries.c.id))
        ]


def test_changes_found_together_are_one_message_and_firing_ones_repeat(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver, repeat_minutes=60)
    for device in ("meter-1", "meter-2", "meter-3"):
        site.device(device)
    site.rule(COLD)
    cold_everywhere(site, ["meter-1", "meter-2", "meter-3"], 0)
    site.evaluator.deliver()
    [grouped] = sent(receiver, 1)
    assert sorted(a["subject"] for a in grouped["alerts"]) == [
        "meter-1/t",
        "meter-2/t",
        "meter-3/t",
    ]
    for n in range(1, 60):  # still cold, within the hour: nothing more
        cold_everywhere(site, ["meter-1", "meter-2", "meter-3"], n)
    site.evaluator.deliver()
    assert len(receiver.inbox.items) == 1
    cold_everywhere(site, ["meter-1", "meter-2", "meter-3"], 60)  # an hour after the first
    site.evaluator.deliver()
    repeat = sent(receiver, 2)[1]
    assert {a["detail"] for a in repeat["alerts"]} == {"still firing (repeat)"}
    assert len(repeat["alerts"]) == 3


def test_an_acknowledged_alert_is_announced_and_not_repeated(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver, repeat_minutes=10)
    site.device("meter-1")
    rule = site.rule(COLD)
    cold_everywhere(site, ["meter-1"], 0)
    site.evaluator.acknowledge(COMMUNITY, rule, "meter-1/t", "concierge")
    with pytest.raises(AlertError, match="acknowledged, not firing"):
        site.evaluator.acknowledge(COMMUNITY, rule, "meter-1/t", "concierge")
    for n in range(1, 30):
        cold_everywhere(site, ["meter-1"], n)
    cold_everywhere(site, ["meter-1"], 30, value=20.0)
    site.evaluator.deliver()
    bodies = sent(receiver, 3)
    states = [a["state"] for body in bodies for a in body["alerts"]]
    assert states == ["firing", "acknowledged", "resolved"]  # no repeats while acknowledged
    assert bodies[1]["alerts"][0]["detail"] == "acknowledged by concierge"


def test_a_silence_mutes_its_minutes_only(site: Site, receiver: HttpReceiver) -> None:
    webhook(site, receiver)
    site.device("meter-1")
    rule = site.rule(COLD)
    with site.log.engine.connect() as conn, conn.begin():
        conn.execute(
            alert_silences.insert().values(
                community_id=COMMUNITY,
                rule_id=rule,
                subject=None,
                starts_at=minute(0),
                ends_at=minute(5),
                comment="boiler maintenance",
            )
        )
    cold_everywhere(site, ["meter-1"], 0)
    cold_everywhere(site, ["meter-1"], 1, value=20.0)
    cold_everywhere(site, ["meter-1"], 6)
    site.evaluator.deliver()
    with site.log.engine.connect() as conn:
        notified = [
            (row.state, row.notified)
            for row in conn.execute(select(alert_events).order_by(alert_events.c.id))
        ]
    assert notified == [
        ("pending", "none"),
        ("firing", "silenced"),
        ("resolved", "silenced"),
        ("pending", "none"),
        ("firing", "queued"),
    ]
    [body] = sent(receiver, 1)
    assert body["alerts"][0]["minute"] == iso(minute(6))


def test_quiet_hours_hold_notifications_unless_the_rule_is_urgent(
    site: Site, receiver: HttpReceiver
) -> None:
    # 03:00 UTC is 04:00 in Madrid: inside 23:00-07:00 local, which ends at 06:00 UTC.
    webhook(site, receiver, quiet_hours={"start": "23:00", "end": "07:00"})
    site.device("meter-1")
    site.rule(COLD)
    site.rule({**COLD, "name": "cold and urgent", "urgent": True})
    cold_everywhere(site, ["meter-1"], 0)
    with site.log.engine.connect() as conn:
        due = [
            row.next_attempt
            for row in conn.execute(select(alert_deliveries).order_by(alert_deliveries.c.id))
        ]
    # One group with an urgent alert in it goes at once.
    assert due == [minute(1)]
    site.evaluator.deliver()
    sent(receiver, 1)
    site.rule({**COLD, "name": "cold, can wait", "condition": {**COLD["condition"], "value": 6}})
    cold_everywhere(site, ["meter-1"], 1)
    with site.log.engine.connect() as conn:
        due = [
            row.next_attempt
            for row in conn.execute(select(alert_deliveries).order_by(alert_deliveries.c.id))
        ]
    assert due[1] == T0 + 3 * 3600
    assert site.evaluator.deliver() == 0
    site.clock.now = T0 + 3 * 3600
    assert site.evaluator.deliver() == 1


def test_a_channel_down_gets_its_notification_after_the_retry(
    site: Site, receiver: HttpReceiver, tmp_path: Path
) -> None:
    webhook(site, receiver)
    site.evaluator.retry_base = 30
    site.device("meter-1")
    site.rule(COLD)
    receiver.stop()  # nobody listens on the port
    cold_everywhere(site, ["meter-1"], 0)
    site.evaluator.deliver()
    site.evaluator.deliver()  # not due yet: no second attempt
    [(status, attempts, tag)] = deliveries(site)
    assert (status, attempts, tag) == ("pending", 1, None)
    with site.log.engine.connect() as conn:
        error = conn.execute(select(alert_deliveries.c.last_error)).scalar_one()
    assert "ConnectError" in error
    receiver.start()
    site.clock.now += 30
    site.evaluator.deliver()
    [body] = sent(receiver, 1)
    assert body["alerts"][0]["state"] == "firing"
    [(status, attempts, tag)] = deliveries(site)
    assert (status, attempts) == ("sent", 2) and tag is not None

    # The notification is on the log: its bundle verifies offline, signed by the registry key.
    site.log.seal()
    bundle = site.log.bundle(tag, device_key=site.registry_key.public_key_b64)
    payload = bundle.entry["payload"]
    assert bundle.entry["contract"] == "alert@1"
    assert (payload["channel"], payload["recipient"]) == ("webhook", receiver.url + "/hook")
    assert payload["alerts"][0]["minute"] == iso(minute(0))
    assert payload["sent_at"] == iso(site.clock.now)
    verify_bundle(bundle.to_json(), log_key=site.log.signer.verifier_key)  # type: ignore[union-attr]
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(bundle.to_json()))
    log_key = site.log.signer.verifier_key  # type: ignore[union-attr]
    assert patio("verify", str(path), "--log-key", log_key, env={}).returncode == 0


def test_ntfy_gets_a_titled_message(site: Site, receiver: HttpReceiver) -> None:
    site.settings(channels=[{"type": "ntfy", "url": receiver.url + "/patio-hoa-1"}])
    site.device("meter-1")
    site.rule({**COLD, "urgent": True})
    cold_everywhere(site, ["meter-1"], 0)
    when(lambda: bool(receiver.inbox.items), site.evaluator.deliver)
    [request] = receiver.inbox.wait_for(1)
    assert request.path == "/patio-hoa-1"
    assert request.headers["Title"] == "[hoa-1] firing: cold meter-1/t"
    assert request.headers["Priority"] == "urgent"
    assert b"meter-1/t" in request.body


def test_an_attempt_that_may_have_been_delivered_is_not_sent_again(
    site: Site, receiver: HttpReceiver
) -> None:
    """At most once: the webhook took the request and broke the connection without an
    answer, so it may have acted on it; the delivery is unconfirmed, never retried."""
    webhook(site, receiver)
    site.device("meter-1")
    site.rule(COLD)
    receiver.drop = True
    cold_everywhere(site, ["meter-1"], 0)
    site.evaluator.deliver()
    [body] = sent(receiver, 1)
    [request] = receiver.inbox.items
    with site.log.engine.connect() as conn:
        delivery = conn.execute(select(alert_deliveries)).one()
    assert delivery.status == "unconfirmed" and "RemoteProtocolError" in delivery.last_error
    # The delivery's id, the same on any attempt: in the signed body and the header.
    assert body["delivery_id"] == request.headers["Idempotency-Key"]
    assert body["delivery_id"] == f"{delivery.id}.{delivery.created_at}"
    receiver.drop = False
    for _ in range(3):
        site.clock.now += 3600
        site.evaluator.deliver()
    assert len(receiver.inbox.items) == 1
    assert deliveries(site) == [("unconfirmed", 1, None)]  # not on the log: not known sent
