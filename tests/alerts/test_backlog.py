"""Rules run on the readings' minutes: a 3-hour backlog delivered after an outage misses
nothing and fires nothing stale as new (late), and state survives a restart."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select

from gateway.alerts.tables import alert_events, alert_states
from tests.alerts.receivers import HttpReceiver
from tests.alerts.site import T0, Site, temperature
from tests.alerts.test_rules import sent, webhook

HOT = {
    "name": "hot",
    "condition": {"kind": "threshold", "sensor": "t", "op": ">", "value": 30, "for": 5},
}


def minute(n: int) -> int:
    return T0 + 60 * n


def value(n: int) -> float:
    return 35.0 if 100 <= n < 120 else 20.0  # too hot for 20 minutes, inside the backlog


def test_a_three_hour_backlog_is_evaluated_as_it_happened_and_marked_late(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver)
    site.device("meter-1")
    site.rule(HOT)
    site.rule({"name": "quiet", "condition": {"kind": "silence", "minutes": 30}})
    for n in range(10):  # live: each minute as it ends
        site.clock.now = minute(n + 1)
        site.reading("meter-1", minute(n), {"t": temperature(value(n))})
        site.evaluator.evaluate()
    site.clock.now = minute(41)  # the link is down: the clock sees the silence, on time
    site.evaluator.evaluate()
    site.clock.now = minute(190)  # back after three hours: the edge's outbox delivers
    for first in range(10, 190, 60):
        batch = [(minute(n), {"t": temperature(value(n))}) for n in range(first, first + 60)]
        site.readings("meter-1", batch)
        site.evaluator.evaluate()
        site.clock.now += 5
    site.evaluator.deliver()
    with site.log.engine.connect() as conn:
        seen = [
            (row.rule_id, row.state, (row.minute - T0) // 60, row.late, row.notified)
            for row in conn.execute(select(alert_events).order_by(alert_events.c.id))
        ]
        states = dict(conn.execute(select(alert_states.c.rule_id, alert_states.c.state)).all())
    assert seen == [
        (2, "firing", 40, False, "queued"),  # the silence, when it happened
        (2, "resolved", 10, True, "queued"),  # heard again: the backlog's first minute
        (1, "pending", 100, True, "none"),
        (1, "firing", 105, True, "queued"),  # five minutes hot, three hours ago: late
        (1, "resolved", 120, True, "queued"),
    ]
    assert states == {1: "resolved", 2: "resolved"}  # nothing still firing from the past
    bodies = sent(receiver, 3)
    late = [(a["state"], a["late"]) for body in bodies for a in body["alerts"]]
    assert late == [("firing", False), ("resolved", True), ("firing", True), ("resolved", True)]


def test_a_pending_alert_survives_a_restart(site: Site, receiver: HttpReceiver) -> None:
    webhook(site, receiver)
    site.device("meter-1")
    site.rule(HOT)
    for n in range(3):  # hot for three minutes: pending
        site.clock.now = minute(n + 1)
        site.reading("meter-1", minute(n), {"t": temperature(35.0)})
        site.evaluator.evaluate()
    site.evaluator.engine.dispose()  # the gateway stops; a new one starts on the same database
    site.evaluator = site.new_evaluator()
    for n in range(3, 8):
        site.clock.now = minute(n + 1)
        site.reading("meter-1", minute(n), {"t": temperature(35.0)})
        site.evaluator.evaluate()
    site.evaluator.deliver()
    with site.log.engine.connect() as conn:
        seen = [
            (row.state, (row.minute - T0) // 60)
            for row in conn.execute(select(alert_events).order_by(alert_events.c.id))
        ]
    assert seen == [("pending", 0), ("firing", 5)]  # counted from before the restart
    [body] = sent(receiver, 1)
    assert body["alerts"][0]["state"] == "firing"


def test_two_gateway_processes_evaluating_at_once_notify_each_change_once(
    site: Site, receiver: HttpReceiver
) -> None:
    webhook(site, receiver)
    site.rule(
        {"name": "cold", "condition": {"kind": "threshold", "sensor": "t", "op": "<", "value": 5}}
    )
    devices = [f"meter-{n}" for n in range(8)]
    for device in devices:
        site.device(device)
    others = [site.new_evaluator() for _ in range(3)]
    try:
        for n in range(6):  # cold, warm, cold...: a change every minute on every device
            site.clock.now = minute(n + 1)
            for device in devices:
                site.reading(device, minute(n), {"t": temperature(1.0 if n % 2 == 0 else 20.0)})
            with ThreadPoolExecutor(len(others) + 1) as pool:
                list(pool.map(lambda e: e.evaluate(), [site.evaluator, *others]))
                list(pool.map(lambda e: e.deliver(), [site.evaluator, *others]))
    finally:
        for other in others:
            other.engine.dispose()
    with site.log.engine.connect() as conn:
        seen = [
            (row.subject, row.state, row.minute)
            for row in conn.execute(select(alert_events).where(alert_events.c.state != "pending"))
        ]
    assert len(seen) == len(set(seen)) == 6 * len(devices)
    notified = [
        (a["subject"], a["state"], a["minute"])
        for body in sent(receiver, 6)
        for a in body["alerts"]
    ]
    assert len(notified) == len(set(notified)) == 6 * len(devices)
    assert len(receiver.inbox.items) == 6  # one message a minute, none sent twice


def test_a_rule_judges_what_arrives_after_it_not_the_history_before(
    tmp_path: Path, database_url: str, receiver: HttpReceiver
) -> None:
    """The evaluator's first start, and a rule added later: the log's history before a rule
    is never evaluated by it (an hour too hot, long ago, fires nothing), while a backlog
    delivered after it is, on the readings' minutes, late, even minutes older than the rule
    and even when the evaluator first runs after they arrived."""
    site = Site(tmp_path, database_url, first_pass=False)
    try:
        webhook(site, receiver)
        site.device("meter-1")
        site.clock.now = minute(61)
        site.readings("meter-1", [(minute(n), {"t": temperature(35.0)}) for n in range(60)])
        site.clock.now = minute(62)
        site.rule(HOT)  # the history above is older than the rule
        site.clock.now = minute(300)  # the link was down: three hours arrive at once
        for first in range(60, 240, 60):
            batch = [(minute(n), {"t": temperature(value(n))}) for n in range(first, first + 60)]
            site.readings("meter-1", batch)
        while site.evaluator.evaluate() >= site.evaluator.batch:  # its first start, only now
            pass
        site.evaluator.evaluate()
        site.clock.now = minute(301)
        late_rule = site.rule({**HOT, "name": "hot, added after the backlog"})
        site.evaluator.evaluate()  # nothing new arrived: the new rule has nothing to judge
        for n in range(240, 246):  # live again, too hot: the new rule judges these
            site.clock.now = minute(n + 1)
            site.reading("meter-1", minute(n), {"t": temperature(35.0)})
            site.evaluator.evaluate()
        with site.log.engine.connect() as conn:
            seen = [
                (row.rule_id, row.state, (row.minute - T0) // 60, row.late)
                for row in conn.execute(select(alert_events).order_by(alert_events.c.id))
            ]
        assert seen == [
            (1, "pending", 100, True),  # in the backlog, not in the history before the rule
            (1, "firing", 105, True),
            (1, "resolved", 120, True),
            (1, "pending", 240, False),
            (late_rule, "pending", 240, False),
            (1, "firing", 245, False),
            (late_rule, "firing", 245, False),
        ]
    finally:
        site.close()
