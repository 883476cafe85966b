"""Alert routes (admin): rules, notification settings, silences, the alerts and their
deliveries, acknowledgment."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field, StringConstraints
from sqlalchemy import Connection, delete, insert, select, update

from gateway.alerts.evaluator import (
    AlertError,
    AlertSettings,
    Evaluator,
    delivery_key,
    iso,
    log_end,
    minute_seconds,
    store_settings,
)
from gateway.alerts.rules import TEXT, RuleSpec, Strict
from gateway.alerts.tables import (
    alert_deliveries,
    alert_events,
    alert_rules,
    alert_settings,
    alert_silences,
    alert_states,
)
from gateway.alerts.task import AlertTask
from gateway.deps import AdminDep, GatewayDep
from gateway.problems import Problem
from gateway.routes.admin import ID_PATTERN
from gateway.store import communities
from ledger.errors import FormatError

router = APIRouter(prefix="/v1/communities/{community_id}", tags=["alerts"])
CommunityId = Annotated[str, Path(pattern=ID_PATTERN)]
MAX_ID = 2**31 - 1  # rule and silence ids are 32-bit integers in the database
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
LISTED = 200  # the newest events and deliveries GET .../alerts shows
REDACTED = "(set)"


class SilenceCreate(Strict):
    """Mute notifications of a rule and/or subject for the minutes in [starts_at, ends_at)."""

    starts_at: str
    ends_at: str
    rule_id: BodyId | None = None
    subject: Annotated[str, StringConstraints(max_length=200, pattern=TEXT)] | None = None
    comment: Annotated[str, StringConstraints(max_length=500, pattern=TEXT)] = ""


class Acknowledge(Strict):
    """Who takes a firing alert."""

    rule_id: BodyId
    subject: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]
    by: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)]


def _evaluator(request: Request) -> Evaluator:
    evaluator: Evaluator = request.app.state.alerts.evaluator
    return evaluator


def _wake(request: Request) -> None:
    task: AlertTask = request.app.state.alerts
    task.wake()


def _writing(gateway: Any) -> Connection:
    """A connection for a write transaction (SQLite: takes the write lock up front)."""
    conn: Connection = gateway.log.engine.connect().execution_options(patio_write=True)
    return conn


def _community(conn: Connection, community_id: str) -> None:
    found = conn.execute(select(communities.c.id).where(communities.c.id == community_id)).first()
    if found is None:
        raise Problem(404, "Not found", f"no community {community_id!r}")


def _rule_view(row: Any) -> dict[str, Any]:
    spec = RuleSpec.model_validate_json(row.spec)
    return {
        "id": row.id,
        "community_id": row.community_id,
        "created_at": iso(row.created_at),
        **spec.model_dump(by_alias=True),
    }


@router.get("/alert-rules", summary="The community's alert rules")
async def list_rules(community_id: CommunityId, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        _community(conn, community_id)
        rows = conn.execute(
            select(alert_rules)
            .where(alert_rules.c.community_id == community_id)
            .order_by(alert_rules.c.id)
        )
        return {"rules": [_rule_view(row) for row in rows]}


@router.post("/alert-rules", status_code=201, summary="Add an alert rule")
async def create_rule(
    community_id: CommunityId, body: RuleSpec, gateway: GatewayDep, _: AdminDep, request: Request
) -> dict[str, Any]:
    now = _evaluator(request).clock()
    with _writing(gateway) as conn, conn.begin():
        _community(conn, community_id)
        rule_id = conn.execute(
            insert(alert_rules).values(
                community_id=community_id,
                name=body.name,
                created_at=now,
                spec=body.model_dump_json(by_alias=True),
                from_idx=log_end(conn),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        row = conn.execute(select(alert_rules).where(alert_rules.c.id == rule_id)).one()
    _wake(request)
    return _rule_view(row)


def _rule(conn: Connection, community_id: str, rule_id: int) -> Any:
    row = conn.execute(
        select(alert_rules).where(
            alert_rules.c.id == rule_id, alert_rules.c.community_id == community_id
        )
    ).first()
    if row is None:
        raise Problem(404, "Not found", f"no alert rule {rule_id} in {community_id!r}")
    return row


@router.get("/alert-rules/{rule_id}", summary="One alert rule")
async def get_rule(
    community_id: CommunityId, rule_id: RowId, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        return _rule_view(_rule(conn, community_id, rule_id))


@router.put("/alert-rules/{rule_id}", summary="Replace an alert rule (its state starts over)")
async def replace_rule(
    community_id: CommunityId,
    rule_id: RowId,
    body: RuleSpec,
    gateway: GatewayDep,
    _: AdminDep,
    request: Request,
) -> dict[str, Any]:
    with _writing(gateway) as conn, conn.begin():
        _rule(conn, community_id, rule_id)
        conn.execute(
            update(alert_rules)
            .where(alert_rules.c.id == rule_id)
            .values(
                name=body.name, spec=body.model_dump_json(by_alias=True), from_idx=log_end(conn)
            )
        )
        conn.execute(delete(alert_states).where(alert_states.c.rule_id == rule_id))
        row = _rule(conn, community_id, rule_id)
    _wake(request)
    return _rule_view(row)


@router.delete("/alert-rules/{rule_id}", status_code=204, summary="Delete an alert rule")
async def delete_rule(
    community_id: CommunityId, rule_id: RowId, gateway: GatewayDep, _: AdminDep
) -> Response:
    with _writing(gateway) as conn, conn.begin():
        _rule(conn, community_id, rule_id)
        conn.execute(delete(alert_states).where(alert_states.c.rule_id == rule_id))
        conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
    return Response(status_code=204)


def _redacted(settings: AlertSettings) -> dict[str, Any]:
    value = settings.model_dump(mode="json", by_alias=True)
    for channel in value["channels"]:
        for secret in ("secret", "token"):
            if channel.get(secret):
                channel[secret] = REDACTED
    return value


@router.get("/alert-settings", summary="Channels, repeat interval, quiet hours (secrets hidden)")
async def get_settings(
    community_id: CommunityId, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        _community(conn, community_id)
        spec = conn.execute(
            select(alert_settings.c.spec).where(alert_settings.c.community_id == community_id)
        ).scalar_one_or_none()
    return _redacted(AlertSettings.model_validate_json(spec) if spec else AlertSettings())


@router.put("/alert-settings", summary="Replace the community's notification settings")
async def put_settings(
    community_id: CommunityId, body: AlertSettings, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    with _writing(gateway) as conn, conn.begin():
        _community(conn, community_id)
        store_settings(conn, community_id, body)
    return _redacted(body)


def _silence_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule_id": row.rule_id,
        "subject": row.subject,
        "starts_at": iso(row.starts_at),
        "ends_at": iso(row.ends_at),
        "comment": row.comment,
    }


@router.post("/alert-silences", status_code=201, summary="Silence notifications for a while")
async def create_silence(
    community_id: CommunityId, body: SilenceCreate, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    try:
        starts, ends = minute_seconds(body.starts_at), minute_seconds(body.ends_at)
    except FormatError as exc:
        raise Problem(422, "Invalid request", str(exc)) from None
    if ends <= starts:
        raise Problem(422, "Invalid request", "ends_at must be after starts_at")
    with _writing(gateway) as conn, conn.begin():
        _community(conn, community_id)
        if body.rule_id is not None:
            _rule(conn, community_id, body.rule_id)
        silence_id = conn.execute(
            insert(alert_silences).values(
                community_id=community_id,
                rule_id=body.rule_id,
                subject=body.subject,
                starts_at=starts,
                ends_at=ends,
                comment=body.comment,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        row = conn.execute(select(alert_silences).where(alert_silences.c.id == silence_id)).one()
    return _silence_view(row)


@router.get("/alert-silences", summary="The community's silences")
async def list_silences(
    community_id: CommunityId, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        _community(conn, community_id)
        rows = conn.execute(
            select(alert_silences)
            .where(alert_silences.c.community_id == community_id)
            .order_by(alert_silences.c.id)
        )
        return {"silences": [_silence_view(row) for row in rows]}


@router.delete("/alert-silences/{silence_id}", status_code=204, summary="End a silence")
async def delete_silence(
    community_id: CommunityId, silence_id: RowId, gateway: GatewayDep, _: AdminDep
) -> Response:
    with _writing(gateway) as conn, conn.begin():
        gone = conn.execute(
            delete(alert_silences).where(
                alert_silences.c.id == silence_id, alert_silences.c.community_id == community_id
            )
        ).rowcount
    if not gone:
        raise Problem(404, "Not found", f"no silence {silence_id} in {community_id!r}")
    return Response(status_code=204)


@router.get("/alerts", summary="Alert states, recent state changes, and deliveries")
async def list_alerts(
    community_id: CommunityId,
    gateway: GatewayDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=LISTED)] = LISTED,
) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        _community(conn, community_id)
        states = conn.execute(
            select(alert_states)
            .where(alert_states.c.community_id == community_id)
            .order_by(alert_states.c.rule_id, alert_states.c.subject)
        )
        events = conn.execute(
            select(alert_events)
            .where(alert_events.c.community_id == community_id)
            .order_by(alert_events.c.id.desc())
            .limit(limit)
        ).all()
        deliveries = conn.execute(
            select(alert_deliveries)
            .where(alert_deliveries.c.community_id == community_id)
            .order_by(alert_deliveries.c.id.desc())
            .limit(limit)
        ).all()
        return {
            "alerts": [
                {
                    "rule_id": s.rule_id,
                    "subject": s.subject,
                    "state": s.state,
                    "since": None if s.since is None else iso(s.since),
                    "acked_by": s.acked_by,
                    "phase": json.loads(s.data).get("phase"),
                }
                for s in states
            ],
            "events": [
                {
                    "id": e.id,
                    "rule_id": e.rule_id,
                    "subject": e.subject,
                    "state": e.state,
                    "minute": iso(e.minute),
                    "detected_at": iso(e.detected_at),
                    "late": e.late,
                    "notified": e.notified,
                    "detail": e.detail,
                }
                for e in reversed(events)
            ],
            "deliveries": [
                {
                    "id": d.id,
                    "delivery_id": delivery_key(d.id, d.created_at),
                    "channel": d.channel,
                    "recipient": d.recipient,
                    "status": d.status,
                    "attempts": d.attempts,
                    "next_attempt": iso(d.next_attempt),
                    "last_error": d.last_error,
                    "sent_at": d.sent_at,
                    "log_tag_id": d.log_tag_id,
                    "alerts": json.loads(d.body)["alerts"],
                }
                for d in reversed(deliveries)
            ],
        }


@router.post("/alerts/ack", summary="Acknowledge a firing alert (no more repeats)")
async def acknowledge(
    community_id: CommunityId, body: Acknowledge, gateway: GatewayDep, _: AdminDep, request: Request
) -> dict[str, Any]:
    try:
        _evaluator(request).acknowledge(community_id, body.rule_id, body.subject, body.by)
    except AlertError as exc:
        raise Problem(
            exc.status, "Not found" if exc.status == 404 else "Conflict", str(exc)
        ) from None
    _wake(request)
    return {
        "rule_id": body.rule_id,
        "subject": body.subject,
        "state": "acknowledged",
        "acked_by": body.by,
    }
