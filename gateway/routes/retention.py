"""Retention routes (admin): a community's policy, a run now, and a device's erasure."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field, StringConstraints

from gateway import retention
from gateway.deps import AdminDep, GatewayDep
from gateway.problems import Problem
from gateway.routes.admin import Strict

router = APIRouter(prefix="/v1", tags=["retention"])


class RetentionPolicy(Strict):
    """Payloads of the community's devices received more than `payload_days` ago are dropped."""

    payload_days: Annotated[int, Field(ge=1, le=retention.MAX_PAYLOAD_DAYS)]


class ErasureRequest(Strict):
    """Why a device's payloads are erased (recorded on the log)."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=200)]


@router.put("/communities/{community_id}/retention", summary="Set a community's retention")
async def put_retention(
    community_id: str, body: RetentionPolicy, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    policy = retention.set_policy(gateway.log.engine, community_id, body.payload_days)
    return vars(policy)


@router.get("/communities/{community_id}/retention", summary="A community's retention")
async def get_retention(community_id: str, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    policy = retention.policy(gateway.log.engine, community_id)
    if policy is None:
        raise Problem(404, "Not found", f"community {community_id!r} has no retention policy")
    return vars(policy)


@router.post("/retention/apply", summary="Apply every retention policy now")
async def apply_retention(gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    dropped = await asyncio.to_thread(retention.apply, gateway.log)
    return {"dropped": dropped}


@router.post("/devices/{device_id}/erase", summary="Drop every payload of a device, on the record")
async def erase_device(
    device_id: str, body: ErasureRequest, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    try:
        erased = await asyncio.to_thread(
            retention.erase_device,
            gateway.log,
            signer=gateway.registry_key,
            device_id=device_id,
            reason=body.reason,
        )
    except retention.RetentionError as exc:
        raise Problem(409, "Conflict", str(exc)) from exc
    gateway.sealer.appended(1)
    return vars(erased)
