"""The evaluator's bulk writes keep every value and the rows' order on each database."""

from __future__ import annotations

from sqlalchemy import select

from gateway.alerts.evaluator import EVENT_COLUMNS, STATE_COLUMNS, UPSERT_STATES, insert_rows
from gateway.alerts.tables import alert_events, alert_states
from tests.alerts.site import COMMUNITY, Site


def test_events_keep_values_and_order(site: Site) -> None:
    events = [
        (COMMUNITY, 7, f"dev-{n}/énergie", "firing", 2**40 + n, 1_800_000_000, n % 2 == 0,
         "queued", f'a "quoted" \\ detail\nwith ☃ and 𝄞 {n}')
        for n in range(300)
    ]  # fmt: skip
    with site.log.engine.connect() as conn, conn.begin():
        insert_rows(conn, "alert_events", EVENT_COLUMNS, events)
        stored = conn.execute(
            select(*(alert_events.c[name] for name, _ in EVENT_COLUMNS)).order_by(alert_events.c.id)
        ).all()
    assert [tuple(row) for row in stored] == events


def test_states_upsert(site: Site) -> None:
    first = [(1, "a", COMMUNITY, "pending", None, None, None, "{}"),
             (2, "b", COMMUNITY, "firing", 60, 120, "ops@x", '{"k": [1, 2.5]}')]  # fmt: skip
    second = [(2, "b", COMMUNITY, "acknowledged", 180, None, "é", '{"phase": "stopped"}'),
              (3, "c", COMMUNITY, "resolved", 0, 0, None, "{}")]  # fmt: skip
    with site.log.engine.connect() as conn, conn.begin():
        insert_rows(conn, "alert_states", STATE_COLUMNS, first, UPSERT_STATES)
        insert_rows(conn, "alert_states", STATE_COLUMNS, second, UPSERT_STATES)
        stored = conn.execute(
            select(*(alert_states.c[name] for name, _ in STATE_COLUMNS)).order_by(
                alert_states.c.rule_id
            )
        ).all()
    assert [tuple(row) for row in stored] == [first[0], *second]
