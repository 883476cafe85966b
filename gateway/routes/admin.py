"""Admin routes: communities (register, settings), devices (register, profile, rotate, revoke)
and apps (create, rotate). Registry changes go to the writer as `RegistryChange`s."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy import select

from contracts.device_registry import REGISTRY_DEVICE, Action, RegistryChange
from contracts.device_types import Profile, resolve
from gateway.auth import APP_PREFIX, new_secret, secret_hash
from gateway.deps import (
    MAX_INDEX,
    MAX_ROW_ID,
    AdminDep,
    CallerDep,
    CommunityPath,
    DevicePath,
    GatewayDep,
    Text,
    forget_tokens,
)
from gateway.problems import Problem
from gateway.store import apps
from ledger.bundle import log_tag_id
from ledger.encoding import b64decode, parse_json, rfc3339_utc
from ledger.errors import FormatError
from ledger.registry_replay import DEFAULT_TIME_ZONE
from ledger.storage import entries

router = APIRouter(prefix="/v1", tags=["admin"])
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # community and device ids
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class Strict(BaseModel):
    """Admin inputs: no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _time_zone(value: str) -> str:
    if value not in _time_zones():
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Madrid, UTC)")
    return value


TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_time_zone)]


class CommunitySettings(Strict):
    """What a community declares: its IANA time zone (reports count days in it)."""

    time_zone: TimeZone = DEFAULT_TIME_ZONE


class CommunityCreate(CommunitySettings):
    """A new community (a homeowners' association)."""

    id: Id
    name: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


class DeviceProfile(Strict):
    """What a device's readings measure: a device type's, an explicit profile, or both (the
    profile's sensors override the type's)."""

    type: Annotated[str, StringConstraints(max_length=64)] | None = None
    sensor: Annotated[str, StringConstraints(max_length=64)] | None = None
    profile: Profile | None = None

    @model_validator(mode="after")
    def _resolves(self) -> DeviceProfile:
        self.declared()
        return self

    def declared(self) -> dict[str, Any] | None:
        """The profile to record (ProfileError, a ValueError, when it cannot be)."""
        return resolve(type_name=self.type, sensor=self.sensor, profile=self.profile)


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


class DeviceCreate(PublicKey, DeviceProfile):
    """A device and its key, registered to one community, and what its readings measure."""

    id: Id
    community_id: Id


class ProfileChange(DeviceProfile):
    """A device's new profile: a type, a profile, or both."""

    @model_validator(mode="after")
    def _given(self) -> ProfileChange:
        if self.type is None and self.profile is None:
            raise ValueError("give a device 'type', a 'profile', or both")
        return self


class AppCreate(Strict):
    """An app (SaaS backend or auditor) and its scopes."""

    name: Annotated[Text, StringConstraints(min_length=1, max_length=200)]
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
    subject = {"id": body.id, "name": body.name, "time_zone": body.time_zone}
    tag, _recorded = await change(gateway, "register_community", subject)
    return {**subject, "log_tag_id": tag}


@router.post("/communities/{community_id}/settings", summary="Change a community's settings")
async def change_community_settings(
    community_id: CommunityPath, body: CommunitySettings, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    subject = {"id": community_id, "time_zone": body.time_zone}
    tag, _recorded = await change(gateway, "set_community_settings", subject)
    return {**subject, "log_tag_id": tag}


@router.post("/devices", status_code=201, summary="Register a device and its public key")
async def create_device(body: DeviceCreate, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    subject = {
        "id": body.id,
        "community_id": body.community_id,
        "public_key": body.public_key,
        "profile": body.declared(),
    }
    tag, _recorded = await change(gateway, "register_device", subject)
    return {**subject, "revoked": False, "log_tag_id": tag}


@router.post("/devices/{device_id}/profile", summary="Declare what a device's readings measure")
async def change_device_profile(
    device_id: DevicePath, body: ProfileChange, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    subject = {"id": device_id, "profile": body.declared()}
    tag, _recorded = await change(gateway, "set_device_profile", subject)
    return {**subject, "log_tag_id": tag}


@router.post("/devices/{device_id}/revoke", summary="Revoke a device's key")
async def revoke_device(device_id: DevicePath, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    tag, recorded = await change(gateway, "revoke_device", {"id": device_id})
    return {"id": device_id, "revoked": True, "revoked_at": recorded["at"], "log_tag_id": tag}


@router.post("/devices/{device_id}/rotate", summary="Replace a device's key")
async def rotate_device(
    device_id: DevicePath, body: PublicKey, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    subject = {"id": device_id, "public_key": body.public_key}
    tag, _recorded = await change(gateway, "rotate_device_key", subject)
    return {"id": device_id, "public_key": body.public_key, "log_tag_id": tag}


@router.get("/registry", summary="The registry's entries in log order (audit)")
async def registry_entries(
    gateway: GatewayDep,
    caller: CallerDep,
    after: Annotated[int, Query(ge=-1, le=MAX_INDEX, description="the previous page's next")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict[str, Any]:
    """Every `registry@1` entry after log index `after`: what `patio audit` replays to check
    the directory, each entry provable with GET /v1/proofs/inclusion."""
    if not caller.audits:
        raise Problem(
            401 if caller.app_id is None else 403,
            "Audit only",
            "the registry's entries need the admin token or an app key with the audit scope",
        )
    with gateway.log.engine.connect() as conn:
        rows = conn.execute(
            select(entries.c.idx, entries.c.leaf_hash, entries.c.entry)
            .where(entries.c.device_id == REGISTRY_DEVICE, entries.c.idx > after)
            .order_by(entries.c.seq)
            .limit(limit + 1)
        ).all()
    items = [
        {
            "index": row.idx,
            "log_tag_id": log_tag_id(bytes(row.leaf_hash)),
            "entry": parse_json(bytes(row.entry), what="entry"),
        }
        for row in rows[:limit]
    ]
    return {"entries": items, "next": items[-1]["index"] if len(rows) > limit else None}


@router.post("/apps", status_code=201, summary="Create an app key (shown once)")
async def create_app_key(body: AppCreate, gateway: GatewayDep, _: AdminDep) -> dict[str, Any]:
    key = new_secret(APP_PREFIX)
    scopes = sorted(set(body.scopes))
    with gateway.log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        app_id = conn.execute(
            apps.insert()
            .values(
                name=body.name,
                scopes=" ".join(scopes),
                key_hash=secret_hash(key),
                created_at=_now(),
                revoked=False,
            )
            .returning(apps.c.id)
        ).scalar_one()
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
