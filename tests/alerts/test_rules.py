"""Each rule kind through the evaluator on a real database: what fires, when, and what is
sent (a real webhook receiver on loopback)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from sqlalchemy import select

from gateway.alerts.channels import SIGNATURE_HEADER
from gateway.alerts.evaluator import iso
from gateway.alerts.tables import alert_events, alert_states
from tests.alerts.receivers import HttpReceiver
from tests.alerts.site import T0, Site, energy, temperature

SECRET = "a-webhook-secret-of-some-length"


def webhook(site: Site, receiver: HttpReceiver, **policy: Any) -> None:
    channel = {"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET}
    site.settings(channels=[channel], **policy)


def events(site: Site) -> list[tuple[str, str, str]]:
    """(subject, state, notified) of every recorded state change, in order."""
    with site.log.engine.connect() as conn:
        rows = conn.execute(select(alert_events).order_by(alert_events.c.id))
        return [(row.subject, row.state, row.notified) for row in rows]


def sent(receiver: HttpReceiver, count: int) -> list[dict[str, Any]]:
    """The first `count` webhook bodies, each checked against its signature."""
    bodies = []
    for request in receiver.inbox.wait_for(count)[:count]:
        digest = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers[SIGNATURE_HEADER] == f"sha256={digest}"
        bodies.append(json.loads(request.body))
    return bodies


def minute(n: int) -> int:
    return T0 + 60 * n


def test_threshold_fires_after_its_for_duration_and_resolves(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver)
    site.device("meter-1")
    site.rule(
        {
            "name": "hot",
            "condition": {"kind": "threshold", "sensor": "t", "op": ">", "value": 30, "for": 5},
        }
    )
    values = [25, 31, 32, 33, 34, 35, 36, 37, 20]  # above from minute 1; 5 minutes on, minute 6
    for n, value in enumerate(values):
        site.clock.now = minute(n) + 70
        site.reading("meter-1", minute(n), {"t": temperature(float(value))})
        site.evaluator.evaluate()
        if n == 5:  # held for 4 minutes only: still pending, nothing sent
            assert events(site) == [("meter-1/t", "pending", "none")]
    site.evaluator.deliver()
    assert events(site) == [
        ("meter-1/t", "pending", "none"),
        ("meter-1/t", "firing", "queued"),
        ("meter-1/t", "resolved", "queued"),
    ]
    first, second = sent(receiver, 2)  # found in two passes: two messages
    assert [(a["state"], a["minute"]) for a in first["alerts"] + second["alerts"]] == [
        ("firing", iso(minute(6))),
        ("resolved", iso(minute(8))),
    ]
    assert not first["alerts"][0]["late"]


def test_a_threshold_that_drops_back_while_pending_sends_nothing(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver)
    site.device("meter-1")
    site.rule(
        {
            "name": "hot",
            "condition": {"kind": "threshold", "sensor": "t", "op": ">", "value": 30, "for": 5},
        }
    )
    for n, value in enumerate([31.0, 32.0, 20.0]):
        site.clock.now = minute(n) + 70
        site.reading("meter-1", minute(n), {"t": temperature(value)})
        site.evaluator.evaluate()
    assert site.evaluator.deliver() == 0
    assert [state for _, state, _ in events(site)] == ["pending", "inactive"]


def test_counter_running_backwards_or_beyond_the_device_types_range(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver)
    site.device(
        "house-1",
        {"sensors": {"house_wh": {"role": "consumption", "unit": "Wh", "min": 0, "max": 500}}},
    )
    site.rule({"name": "meter", "condition": {"kind": "counter", "sensor": "house_wh"}})
    for n, wh in enumerate([12.0, -3.0, 14.0, 9000.0, 11.0]):
        site.clock.now = minute(n) + 70
        site.reading("house-1", minute(n), {"house_wh": energy(wh)})
        site.evaluator.evaluate()
    with site.log.engine.connect() as conn:
        details = [
            row.detail for row in conn.execute(select(alert_events).order_by(alert_events.c.id))
        ]
    assert [state for _, state, _ in events(site)] == ["firing", "resolved", "firing", "resolved"]
    assert "runs backwards" in details[0] and "beyond the plausible 500" in details[2]


def test_silence_by_the_wall_clock_then_resolved_by_the_next_reading(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver)
    site.device("meter-1")
    site.rule({"name": "quiet meter", "condition": {"kind": "silence", "minutes": 15}})
    site.clock.now = minute(1)  # received as its minute ends
    site.reading("meter-1", minute(0), {"t": temperature(20.0)})
    site.evaluator.evaluate()
    site.clock.now = minute(16)  # heard last at the end of minute 0: 15 minutes ago
    site.evaluator.evaluate()
    assert events(site) == []
    site.clock.now = minute(16) + 1
    site.evaluator.evaluate()
    assert events(site) == [("meter-1", "firing", "queued")]
    site.clock.now = minute(30)
    site.evaluator.evaluate()  # still silent: no second firing
    site.reading("meter-1", minute(29), {"t": temperature(20.0)})
    site.evaluator.evaluate()
    site.evaluator.deliver()
    assert events(site)[-1] == ("meter-1", "resolved", "queued")
    bodies = sent(receiver, 2)
    assert [(a["state"], a["minute"], a["late"]) for b in bodies for a in b["alerts"]] == [
        ("firing", iso(minute(16)), False),
        ("resolved", iso(minute(29)), False),
    ]


def test_a_silent_device_that_never_sent_is_reported_from_its_registration(site: Site) -> None:
    site.device("meter-2")
    site.rule({"name": "quiet meter", "condition": {"kind": "silence", "minutes": 10}})
    site.clock.now = T0 + 11 * 60
    site.evaluator.evaluate()
    assert events(site) == [("meter-2", "firing", "no_channel")]
    with site.log.engine.connect() as conn:
        assert conn.execute(select(alert_states.c.state)).scalar_one() == "firing"


@pytest.mark.parametrize("field", ["avg", "min"])
def test_rules_of_other_devices_and_sensors_are_left_alone(site: Site, field: str) -> None:
    site.device("meter-1")
    site.device("meter-2")
    site.rule(
        {
            "name": "cold",
            "condition": {
                "kind": "threshold",
                "sensor": "t",
                "field": field,
                "op": "<",
                "value": 5,
                "device": "meter-2",
            },
        }
    )
    site.clock.now = minute(0) + 70
    site.reading("meter-1", minute(0), {"t": temperature(1.0)})
    site.reading("meter-2", minute(0), {"u": temperature(1.0)})
    site.evaluator.evaluate()
    assert events(site) == []


def test_a_pass_skips_a_minute_resent_out_of_order_and_hears_its_latest_arrival(
    site: Site,
) -> None:
    """One pass over a device's readings whose minutes go back once (minute 1 after minute 2):
    every rule skips the older minute; a silence counts from the pass's latest arrival."""
    site.device("meter-1")
    site.rule(
        {"name": "hot", "condition": {"kind": "threshold", "sensor": "t", "op": ">", "value": 30}}
    )
    site.rule({"name": "quiet meter", "condition": {"kind": "silence", "minutes": 15}})
    site.clock.now = minute(5)
    cold, hot = {"t": temperature(20.0)}, {"t": temperature(35.0)}
    site.readings(
        "meter-1", [(minute(0), cold), (minute(2), hot), (minute(1), cold), (minute(3), cold)]
    )
    site.clock.now = minute(20)  # the device is heard again (a minute it had kept)
    site.readings("meter-1", [(minute(4), cold)])
    site.clock.now = minute(20) + 1  # 15 minutes and a second after the first batch
    site.evaluator.evaluate()
    with site.log.engine.connect() as conn:
        rows = conn.execute(select(alert_events).order_by(alert_events.c.id)).all()
    assert [(row.subject, row.state, row.minute) for row in rows] == [
        ("meter-1/t", "pending", minute(2)),
        ("meter-1/t", "firing", minute(2)),
        ("meter-1/t", "resolved", minute(3)),  # not minute 1: older than minute 2
    ]
