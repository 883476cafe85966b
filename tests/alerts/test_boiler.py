"""The boiler monitor seed, replayed minute by minute: its phases, the alert on the change
into stopped, and its no-repeat window (no mail if one went out in the previous 10 minutes)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from gateway.alerts.evaluator import iso
from gateway.alerts.tables import alert_events, alert_states
from tests.alerts.receivers import SmtpReceiver
from tests.alerts.site import T0, Site, switch, temperature

SET_POINT = 60.0  # the seed's TEMP_CHAUDIERE_ALERT
STOPPED_BELOW = 45.0  # the seed's TEMP_CHAUDIERE_FAILURE
BOILER = {
    "kind": "boiler",
    "water": "temp0",
    "fan": "vent_primaire",
    "ignition": "allumage",
    "set_point": SET_POINT,
    "stopped_below": STOPPED_BELOW,
}

# (minutes, water, fan, ignition) in order: ignition, combustion, holding, a stop at 03:12,
# back to combustion, a second stop 6 minutes after the first ended (inside the window),
# combustion for 12 minutes, a third stop (outside the window).
SEQUENCE = [
    (2, 62.0, False, True),
    (4, 65.0, True, False),
    (4, 70.0, False, False),
    (2, 50.0, False, False),  # below the set point, not yet stopped
    (3, 40.0, False, False),  # stopped: first mail
    (5, 66.0, True, False),
    (2, 40.0, False, False),  # stopped again within 10 minutes of the last: nothing sent
    (12, 66.0, True, False),
    (1, 40.0, False, False),  # stopped, 12 minutes after: sent again
]


def replay(site: Site) -> list[tuple[int, str]]:
    """Submit the sequence a minute at a time, evaluating after each; (minute, phase) seen."""
    phases = []
    n = 0
    for count, water, fan, ignition in SEQUENCE:
        for _ in range(count):
            site.clock.now = T0 + 60 * n + 60
            readings: dict[str, Any] = {
                "temp0": temperature(water),
                "vent_primaire": switch(fan),
                "allumage": switch(ignition),
            }
            site.reading("boiler-1", T0 + 60 * n, readings)
            site.evaluator.evaluate()
            site.evaluator.deliver()
            with site.log.engine.connect() as conn:
                data = conn.execute(select(alert_states.c.data)).scalars().first()
            phases.append((n, data or ""))
            n += 1
    return phases


def test_the_seed_sequence_sends_the_first_stop_and_the_one_after_the_window(
    site: Site, smtp: SmtpReceiver
) -> None:
    site.evaluator.sender = type(site.evaluator.sender)(smtp_url=smtp.url)
    site.settings(channels=[{"type": "email", "to": ["concierge@example.org"]}])
    site.device("boiler-1")
    site.rule(
        {"name": "boiler stopped", "urgent": True, "condition": {**BOILER, "into": "stopped"}}
    )
    phases = replay(site)
    assert json.loads(phases[0][1])["phase"] == "ignition"
    assert json.loads(phases[8][1])["phase"] == "holding"
    with site.log.engine.connect() as conn:
        fired = [
            (row.minute, row.notified)
            for row in conn.execute(
                select(alert_events)
                .where(alert_events.c.state == "firing")
                .order_by(alert_events.c.id)
            )
        ]
    assert fired == [
        (T0 + 60 * 12, "queued"),
        (T0 + 60 * 20, "suppressed"),
        (T0 + 60 * 34, "queued"),
    ]
    mails = smtp.inbox.wait_for(2)
    assert len(mails) == 2
    for (recipients, message), stopped in zip(mails, (12, 34), strict=True):
        assert recipients == ["concierge@example.org"]
        assert "firing: boiler stopped boiler-1" in message["Subject"]
        assert iso(T0 + 60 * stopped) in message.get_payload()


def test_below_the_set_point_is_its_own_rule(site: Site) -> None:
    site.device("boiler-1")
    site.rule({"name": "water below set point", "condition": {**BOILER, "into": "below_set_point"}})
    replay(site)
    with site.log.engine.connect() as conn:
        fired = [
            row.minute
            for row in conn.execute(
                select(alert_events)
                .where(alert_events.c.state == "firing")
                .order_by(alert_events.c.id)
            )
        ]
    assert fired == [T0 + 60 * 10]  # into the phase once; later stops pass below it
