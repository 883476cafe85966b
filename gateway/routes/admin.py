"""Admin routes: communities, devices (register, rotate, revoke) and apps (create, rotate)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import select

from contracts.device_registry import Action, RegistryChange
from gateway.auth import APP_PREFIX, new_secret, secret_hash
from gateway.deps import MAX_INDEX, AdminDep, GatewayDep, forget_tokens
from gateway.problems import Problem
from gateway.store import apps
from ledger.encoding import b64decode, rfc3339_utc
from ledger.errors import FormatError

router = APIRouter(prefix="/v1", tags=["admin"])
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # community and device ids
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class Strict(BaseModel):
    """Admin inputs: no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class CommunityCreate(Strict):
    """A new community (a homeowners' association)."""

    id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PublicKey(Strict):
    """An Ed25519 public key, standard base64 with padding."""

    public_key: str

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            b64decode(value, what="public_key", length=32)
        except FormatError as exc:
            raise ValueError(str(exc)) from exc
        return value


class DeviceCreate(PublicKey):
    """A device and its key, registered to one community."""

    id: Id
    community_id: Id


class AppCreate(Strict):
    """An app (SaaS backend or auditor) and its scopes."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    scopes: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^(audit|read:[A-Za-z0-9_.-]{1,64})$")]],
        Field(min_length=1, max_length=100),
    ]


def _now() -> str:
    return rfc3339_utc(datetime.now(UTC))


async def change(gateway: Any, action: Action, subject: dict[str, Any]) -> tuple[str, Any]:
    """Have the writer record a registry change (entry and directory row in one commit):
    the entry's log tag id and what it recorded; a refusal becomes its problem."""
    [verdict] = await gateway.writer.request(RegistryChange(action, subject, _now()))
    gateway.directory.forget(subject["id"])
    result = verdict.result
    if verdict.recorded != "accepted":
        headers = {"Retry-After": "1"} if result["code"] == 503 else None
        raise Problem(result["code"], verdict.title or "Refused", result["error"], headers=headers)
    assert verdict.response is not None
    return result["log_tag_id"], verdict.response


@router.post("/communities", status_code=201, summary="Create a community")
async def create_community(
    body: CommunityCreate, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    tag, _recorded = await change(gateway, "register_community", {"id": body.id, "name": body.name})
    return {"id": body.id, "name": body.name, "log_tag_id": tag}


@router.post("/devices", status_code=201, summary="Register a device and its public key")
async def create_device(body: DeviceCreate, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    subject = {"id": body.id, "community_id": body.community_id, "public_key": body.public_key}
    tag, _recorded = await change(gateway, "register_device", subject)
    return {**subject, "revoked": False, "log_tag_id": tag}


@router.post("/devices/{device_id}/revoke", summary="Revoke a device's key")
async def revoke_device(device_id: str, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    tag, recorded = await change(gateway, "revoke_device", {"id": device_id})
    return {"id": device_id, "revoked": True, "revoked_at": recorded["at"], "log_tag_id": tag}


@router.post("/devices/{device_id}/rotate", summary="Replace a device's key")
async def rotate_device(
    device_id: str, body: PublicKey, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    subject = {"id": device_id, "public_key": body.public_key}
    tag, _recorded = await change(gateway, "rotate_device_key", subject)
    return {"id": device_id, "public_key": body.public_key, "log_tag_id": tag}


@router.post("/apps", status_code=201, summary="Create an app key (shown once)")
async def create_app_key(body: AppCreate, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    key = new_secret(APP_PREFIX)
    scopes = sorted(set(body.scopes))
    with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        app_id = conn.execute(
            apps.insert().values(
                name=body.name,
                scopes=" ".join(scopes),
                key_hash=secret_hash(key),
                created_at=_now(),
                revoked=False,
            )
        ).inserted_primary_key[0]
    return {"id": app_id, "name": body.name, "scopes": scopes, "api_key": key}


@router.post("/apps/{app_id}/rotate", summary="Replace an app's key (the old one stops working)")
async def rotate_app_key(
    app_id: Annotated[int, Path(ge=1, le=MAX_INDEX)], gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    key = new_secret(APP_PREFIX)
    with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        row = conn.execute(select(apps).where(apps.c.id == app_id)).first()
        if row is None:
            raise Problem(404, "Not found", f"no app {app_id}")
        conn.execute(apps.update().where(apps.c.id == app_id).values(key_hash=secret_hash(key)))
    forget_tokens()
    return {"id": app_id, "name": row.name, "scopes": row.scopes.split(), "api_key": key}
