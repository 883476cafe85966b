"""Reads for people and apps: the communities and devices a key may read, and the latest
minute of every device of a community."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, Select, func, select

from contracts.device_types import roles
from gateway.auth import Caller
from gateway.deps import CommunityPath, GatewayDep, ReaderDep
from gateway.problems import Problem
from gateway.routes.admin import ID_PATTERN
from gateway.store import communities, devices, readings
from ledger.encoding import parse_json

router = APIRouter(prefix="/v1", tags=["communities"])

PAGE_LIMIT = Annotated[int, Query(ge=1, le=1000, description="items per page")]
AFTER = Annotated[
    str | None,
    Query(pattern=ID_PATTERN, description="the last id of the previous page (its `next`)"),
]


def _by_id(query: Select[Any], column: Any, after: str | None, limit: int, postgres: bool) -> Any:
    """One page ordered by id in byte order (PostgreSQL's default collation may differ
    from SQLite's), one row more than asked to know whether another page follows."""
    key = column.collate("C") if postgres else column
    if after is not None:
        query = query.where(key > after)
    return query.order_by(key).limit(limit + 1)


def _page(rows: Sequence[Any], limit: int, item: Any) -> dict[str, Any]:
    items = [item(row) for row in rows[:limit]]
    return {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}


def _readable(caller: Caller, column: Any) -> ColumnElement[bool] | None:
    """The filter to a scoped key's communities; None for the admin and audit keys."""
    readable = caller.readable
    return None if readable is None else column.in_(sorted(readable))


def _community(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "time_zone": row.time_zone,
        "created_at": row.created_at,
    }


def _device(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "community_id": row.community_id,
        "public_key": row.public_key,
        "revoked": row.revoked_at is not None,
        "revoked_at": row.revoked_at,
        "created_at": row.created_at,
        "profile": None if row.profile is None else parse_json(row.profile, what="profile"),
    }


@router.get("/communities", summary="Communities this key may read, by id")
async def list_communities(
    gateway: GatewayDep, caller: ReaderDep, limit: PAGE_LIMIT = 100, after: AFTER = None
) -> dict[str, Any]:
    """A page of communities ordered by id; a scoped app key sees only its communities."""
    query = select(communities)
    if (only := _readable(caller, communities.c.id)) is not None:
        query = query.where(only)
    postgres = gateway.log.engine.dialect.name == "postgresql"
    with gateway.log.engine.connect() as conn:
        rows = conn.execute(_by_id(query, communities.c.id, after, limit, postgres)).all()
    return _page(rows, limit, _community)


@router.get("/devices", summary="Devices this key may read, by id")
async def list_devices(
    gateway: GatewayDep,
    caller: ReaderDep,
    community: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="only this community's devices")
    ] = None,
    limit: PAGE_LIMIT = 100,
    after: AFTER = None,
) -> dict[str, Any]:
    """A page of devices ordered by id, with their current key; a scoped app key sees only
    its communities' devices, and a community it may not read is answered 404."""
    query = select(devices)
    if community is not None:
        with gateway.log.engine.connect() as conn:
            known = conn.execute(
                select(communities.c.id).where(communities.c.id == community)
            ).first()
        if known is None or not caller.can_read(community):
            raise Problem(404, "Not found", f"no community {community!r}")
        query = query.where(devices.c.community_id == community)
    elif (only := _readable(caller, devices.c.community_id)) is not None:
        query = query.where(only)
    postgres = gateway.log.engine.dialect.name == "postgresql"
    with gateway.log.engine.connect() as conn:
        rows = conn.execute(_by_id(query, devices.c.id, after, limit, postgres)).all()
    return _page(rows, limit, _device)


POWER_ROLES = ("generation", "consumption", "grid_import", "grid_export")


def average_watts(reading: Any) -> float | None:
    """Mean power over the minute: a W gauge's avg, a kW gauge's avg * 1000, or a Wh
    counter's sum * 60; None when the reading says nothing finite about power."""
    if not isinstance(reading, dict):
        return None
    unit = reading.get("unit")
    scales = {"W": ("avg", 1.0), "kW": ("avg", 1000.0), "Wh": ("sum", 60.0)}
    scale = scales.get(unit) if isinstance(unit, str) else None
    if scale is None or not isinstance(reading.get(scale[0]), int | float):
        return None
    watts = float(reading[scale[0]]) * scale[1]
    return watts if math.isfinite(watts) else None


@router.get(
    "/communities/{community_id}/latest",
    summary="Latest minute per device and sensor",
    description="Power sums each reading by the role its device's profile declares "
    "(generation, consumption, grid_import, grid_export): W and kW gauges by their average, "
    "Wh counters by their minute's sum times 60; readings without a declared role, or in "
    "other units (VA is apparent power), are listed but not summed. "
    "net_w = generation_w - consumption_w.",
)
async def latest(
    community_id: CommunityPath, gateway: GatewayDep, caller: ReaderDep
) -> dict[str, Any]:
    if not caller.can_read(community_id):
        raise Problem(403, "Forbidden", f"this key may not read community {community_id!r}")
    with gateway.log.engine.connect() as conn:
        if not conn.execute(
            select(communities.c.id).where(communities.c.id == community_id)
        ).first():
            raise Problem(404, "Not found", f"no community {community_id!r}")
        newest = (
            select(readings.c.device_id, func.max(readings.c.start).label("start"))
            .where(readings.c.community_id == community_id)
            .group_by(readings.c.device_id)
            .subquery()
        )
        rows = conn.execute(
            select(readings.c.device_id, readings.c.start, func.max(readings.c.idx).label("idx"))
            .join(
                newest,
                (newest.c.device_id == readings.c.device_id) & (newest.c.start == readings.c.start),
            )
            .group_by(readings.c.device_id, readings.c.start)
        ).all()
        declared = {
            row.id: roles(None if row.profile is None else parse_json(row.profile, what="profile"))
            for row in conn.execute(
                select(devices.c.id, devices.c.profile).where(
                    devices.c.community_id == community_id
                )
            )
        }
    stored = gateway.log.entries_at([r.idx for r in rows])
    devices_out = []
    totals = dict.fromkeys(POWER_ROLES, 0.0)
    seen = dict.fromkeys(POWER_ROLES, False)
    for row in sorted(rows, key=lambda r: r.device_id):
        entry = stored[row.idx]
        if entry.entry is None:
            continue  # payload removed (retention or erasure): nothing to show
        payload = entry.entry_object()["payload"]
        readings_ = payload.get("readings")
        if readings_ is None and isinstance(payload.get("dataToStore"), dict):
            data = payload["dataToStore"]
            readings_ = {
                data.get("sensor_id", "amount"): {
                    "unit": "raw",
                    "value": data.get("amount"),
                    "type": data.get("type"),
                }
            }
        # Only what the device declared counts (its profile), never a guess from a name.
        device_roles = declared.get(row.device_id, {})
        for name, reading in (readings_ or {}).items():
            which, watts = device_roles.get(name), average_watts(reading)
            if which in totals and watts is not None:
                totals[which] += watts
                seen[which] = True
        devices_out.append(
            {
                "device_id": row.device_id,
                "start": row.start,
                "log_tag_id": entry.log_tag_id,
                "readings": readings_,
                "roles": {name: device_roles[name] for name in readings_ or {}
                          if name in device_roles},
            }
        )  # fmt: skip
    power: dict[str, float | None] = {
        f"{role}_w": totals[role] if seen[role] else None for role in POWER_ROLES
    }
    power["net_w"] = (
        totals["generation"] - totals["consumption"]
        if seen["generation"] or seen["consumption"]
        else None
    )
    # Sums of absurd but finite readings can still overflow: say nothing rather than inf.
    power = {k: v if v is None or math.isfinite(v) else None for k, v in power.items()}
    return {"community_id": community_id, "devices": devices_out, "power": power}
