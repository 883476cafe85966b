"""The reads the dashboard needs beyond the pinned API: who am I, and lists to choose from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from gateway.deps import AdminDep, GatewayDep, ReaderDep
from gateway.problems import Problem
from gateway.store import apps, communities, devices

router = APIRouter(prefix="/v1", tags=["dashboard"])


@router.get("/me", summary="What the presented key may do")
async def me(caller: ReaderDep) -> dict[str, Any]:
    """`communities` is null when the key reads every community (admin, audit scope)."""
    readable = caller.readable
    return {
        "admin": caller.admin,
        "app_id": caller.app_id,
        "scopes": sorted(caller.scopes),
        "communities": None if readable is None else sorted(readable),
    }


@router.get("/communities", summary="The communities this key may read")
async def list_communities(gateway: GatewayDep, caller: ReaderDep) -> dict[str, Any]:
    count = (
        select(devices.c.community_id, func.count().label("devices"))
        .group_by(devices.c.community_id)
        .subquery()
    )
    query = (
        select(communities, func.coalesce(count.c.devices, 0).label("devices"))
        .join(count, count.c.community_id == communities.c.id, isouter=True)
        .order_by(communities.c.id)
    )
    if caller.readable is not None:
        query = query.where(communities.c.id.in_(caller.readable))
    with gateway.log.engine.connect() as conn:
        rows = conn.execute(query).all()
    return {"communities": [dict(row._mapping) for row in rows]}


@router.get("/communities/{community_id}/devices", summary="A community's devices and keys")
async def list_devices(community_id: str, gateway: GatewayDep, caller: ReaderDep) -> dict[str, Any]:
    if not caller.can_read(community_id):
        raise Problem(403, "Forbidden", f"this key may not read community {community_id!r}")
    with gateway.log.engine.connect() as conn:
        if not conn.execute(
            select(communities.c.id).where(communities.c.id == community_id)
        ).first():
            raise Problem(404, "Not found", f"no community {community_id!r}")
        rows = conn.execute(
            select(devices).where(devices.c.community_id == community_id).order_by(devices.c.id)
        ).all()
    return {"devices": [dict(row._mapping) for row in rows]}


@router.get("/apps", summary="App keys (their names and scopes; never the keys)")
async def list_apps(gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        rows = conn.execute(
            select(
                apps.c.id, apps.c.name, apps.c.scopes, apps.c.created_at, apps.c.revoked
            ).order_by(apps.c.id)
        ).all()
    return {
        "apps": [
            {**row._mapping, "scopes": row.scopes.split(), "revoked": bool(row.revoked)}
            for row in rows
        ]
    }
