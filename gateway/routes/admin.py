"""Admin routes: communities, devices (register, rotate, revoke) and apps (create, rotate)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from contracts.device_registry import REGISTRY_DEVICE, Action, RegistryContract
from gateway.auth import APP_PREFIX, new_secret, secret_hash
from gateway.deps import MAX_ROW_ID, AdminDep, DevicePath, GatewayDep, Text, forget_tokens
from gateway.problems import Problem
from gateway.store import apps, communities, device_changes, device_keys, devices
from gateway.submissions import Record
from ledger.encoding import b64decode, rfc3339_utc
from ledger.errors import FormatError
from ledger.storage import entries

router = APIRouter(prefix="/v1", tags=["admin"])
REGISTRY = RegistryContract()
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    """Admin inputs: no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class CommunityCreate(Strict):
    """A new community (a homeowners' association)."""

    id: Id
    name: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


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

    name: Annotated[Text, StringConstraints(min_length=1, max_length=200)]
    scopes: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^(audit|read:[A-Za-z0-9_.-]{1,64})$")]],
        Field(min_length=1, max_length=100),
    ]


def _now() -> str:
    return rfc3339_utc(datetime.now(UTC))


async def record(gateway: Any, action: Action, subject: dict[str, Any]) -> str:
    """Append a registry entry signed by the registry key; returns its log tag id."""
    for _ in range(5):
        with gateway.log.engine.connect() as conn:
            last = conn.execute(
                select(func.max(entries.c.seq)).where(entries.c.device_id == REGISTRY_DEVICE)
            ).scalar_one()
        submission = REGISTRY.submission(
            signer=gateway.registry_key,
            seq=(last or 0) + 1,
            action=action,
            subject=subject,
            at=_now(),
        )
        [verdict] = await gateway.writer.request(Record(submissions=[submission]))
        if verdict.recorded in ("accepted", "duplicate"):
            tag: str = verdict.result["log_tag_id"]
            return tag
    raise Problem(
        503,
        "Busy",
        "the registry is being written concurrently; retry",
        headers={"Retry-After": "1"},
    )


@router.post("/communities", status_code=201, summary="Create a community")
async def create_community(
    body: CommunityCreate, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        if conn.execute(select(communities.c.id).where(communities.c.id == body.id)).first():
            raise Problem(409, "Conflict", f"community {body.id!r} already exists")
    tag = await record(gateway, "register_community", {"id": body.id, "name": body.name})
    try:
        with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(communities.insert().values(id=body.id, name=body.name, created_at=_now()))
    except IntegrityError as exc:
        raise Problem(409, "Conflict", f"community {body.id!r} already exists") from exc
    return {"id": body.id, "name": body.name, "log_tag_id": tag}


@router.post("/devices", status_code=201, summary="Register a device and its public key")
async def create_device(body: DeviceCreate, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    with gateway.log.engine.connect() as conn:
        if not conn.execute(
            select(communities.c.id).where(communities.c.id == body.community_id)
        ).first():
            raise Problem(404, "Not found", f"no community {body.community_id!r}")
        if conn.execute(select(devices.c.id).where(devices.c.id == body.id)).first():
            raise Problem(409, "Conflict", f"device {body.id!r} already exists")
    subject = {"id": body.id, "community_id": body.community_id, "public_key": body.public_key}
    tag = await record(gateway, "register_device", subject)
    now = _now()
    try:
        with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            conn.execute(
                devices.insert().values(
                    id=body.id,
                    community_id=body.community_id,
                    public_key=body.public_key,
                    created_at=now,
                )
            )
            conn.execute(
                device_keys.insert().values(
                    device_id=body.id, public_key=body.public_key, created_at=now
                )
            )
            conn.execute(device_changes.insert().values(device_id=body.id))
    except IntegrityError as exc:
        raise Problem(409, "Conflict", f"device {body.id!r} already exists") from exc
    gateway.directory.forget(body.id)
    return {**subject, "revoked": False, "log_tag_id": tag}


def _device(gateway: Any, device_id: str) -> Any:
    with gateway.log.engine.connect() as conn:
        row = conn.execute(select(devices).where(devices.c.id == device_id)).first()
    if row is None:
        raise Problem(404, "Not found", f"no device {device_id!r}")
    return row


@router.post("/devices/{device_id}/revoke", summary="Revoke a device's key")
async def revoke_device(device_id: DevicePath, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    row = _device(gateway, device_id)
    if row.revoked_at is not None:
        return {"id": device_id, "revoked": True, "revoked_at": row.revoked_at}
    tag = await record(gateway, "revoke_device", {"id": device_id, "public_key": row.public_key})
    now = _now()
    with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        conn.execute(devices.update().where(devices.c.id == device_id).values(revoked_at=now))
        conn.execute(device_changes.insert().values(device_id=device_id))
    gateway.directory.forget(device_id)
    return {"id": device_id, "revoked": True, "revoked_at": now, "log_tag_id": tag}


@router.post("/devices/{device_id}/rotate", summary="Replace a device's key")
async def rotate_device(
    device_id: DevicePath, body: PublicKey, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    row = _device(gateway, device_id)
    if row.revoked_at is not None:
        raise Problem(409, "Conflict", f"device {device_id!r} is revoked; register a new one")
    tag = await record(
        gateway,
        "rotate_device_key",
        {"id": device_id, "old_public_key": row.public_key, "public_key": body.public_key},
    )
    now = _now()
    with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        conn.execute(
            devices.update().where(devices.c.id == device_id).values(public_key=body.public_key)
        )
        conn.execute(
            device_keys.insert().values(
                device_id=device_id, public_key=body.public_key, created_at=now
            )
        )
        conn.execute(device_changes.insert().values(device_id=device_id))
    gateway.directory.forget(device_id)
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
    app_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    key = new_secret(APP_PREFIX)
    with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        row = conn.execute(select(apps).where(apps.c.id == app_id)).first()
        if row is None:
            raise Problem(404, "Not found", f"no app {app_id}")
        conn.execute(apps.update().where(apps.c.id == app_id).values(key_hash=secret_hash(key)))
    forget_tokens()
    return {"id": app_id, "name": row.name, "scopes": row.scopes.split(), "api_key": key}
