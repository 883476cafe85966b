"""Reads for people and apps: the latest minute of every device of a community."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from gateway.deps import GatewayDep, ReaderDep
from gateway.problems import Problem
from gateway.store import communities, readings

router = APIRouter(prefix="/v1", tags=["communities"])

# Reading names that say which side of the meter they are on.
GENERATION = ("solar", "pv", "gen")
CONSUMPTION = ("load", "consumption", "house", "grid_import", "cons")


def average_watts(reading: Any) -> float | None:
    """Mean power over the minute: a W gauge's avg, a kW gauge's avg * 1000, or a Wh
    counter's sum * 60; None when the reading says nothing finite about power."""
    if not isinstance(reading, dict):
        return None
    scale = {"W": ("avg", 1.0), "kW": ("avg", 1000.0), "Wh": ("sum", 60.0)}.get(reading.get("unit"))
    if scale is None or not isinstance(reading.get(scale[0]), int | float):
        return None
    watts = float(reading[scale[0]]) * scale[1]
    return watts if math.isfinite(watts) else None


def side(name: str) -> str | None:
    """'generation', 'consumption' or None, from a reading's name."""
    lowered = name.lower()
    if lowered.startswith(GENERATION):
        return "generation"
    if lowered.startswith(CONSUMPTION):
        return "consumption"
    return None


@router.get("/communities/{community_id}/latest", summary="Latest minute per device and sensor")
async def latest(community_id: str, gateway: GatewayDep, caller: ReaderDep) -> dict[str, Any]:
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
    stored = gateway.log.entries_at([r.idx for r in rows])
    devices_out = []
    totals = {"generation": 0.0, "consumption": 0.0}
    seen = {"generation": False, "consumption": False}
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
        for name, reading in (readings_ or {}).items():
            which, watts = side(name), average_watts(reading)
            if which and watts is not None:
                totals[which] += watts
                seen[which] = True
        devices_out.append(
            {
                "device_id": row.device_id,
                "start": row.start,
                "log_tag_id": entry.log_tag_id,
                "readings": readings_,
            }
        )
    power: dict[str, float | None] = {
        "generation_w": totals["generation"] if seen["generation"] else None,
        "consumption_w": totals["consumption"] if seen["consumption"] else None,
    }
    power["net_w"] = (
        totals["generation"] - totals["consumption"]
        if seen["generation"] or seen["consumption"]
        else None
    )
    # Sums of absurd but finite readings can still overflow: say nothing rather than inf.
    power = {k: v if v is None or math.isfinite(v) else None for k, v in power.items()}
    return {"community_id": community_id, "devices": devices_out, "power": power}
