"""The reads the dashboard needs beyond the pinned API: who am I, and the app keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from gateway.deps import AdminDep, GatewayDep, ReaderDep
from gateway.store import apps

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
