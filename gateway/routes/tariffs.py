"""A community's tariff: set by the admin as a registry change on the log, read by readers.

The tariff document (contracts/energy/tariff.py, `patio-tariff/v1`) and the contracted power
per power period are recorded as a `set_community_tariff` registry entry, through the same
writer path and transaction as every registry change, so a report's inputs are provable
from the log. A new document may add versions and close the open one, but must keep every
version already in force before today (in the community's time zone) as it was: a tariff
change never rewrites past costs.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contracts.energy.errors import ReportError, TariffError
from contracts.energy.periods import zone_named
from contracts.energy.provenance import contracted_power, tariff_digest
from contracts.energy.tariff import Tariff, parse_tariff
from gateway.deps import AdminDep, GatewayDep, ReaderDep
from gateway.problems import Problem
from gateway.routes.admin import change
from ledger.encoding import canonical_json, parse_json
from ledger.errors import FormatError
from ledger.registry_replay import REGISTRY_DEVICE, RegistryEntry, replay
from ledger.storage import DriverCursor

router = APIRouter(prefix="/v1", tags=["admin"])
MAX_TARIFF_BYTES = 256 * 1024

DecimalText = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]+)?$")]


class TariffChange(BaseModel):
    """A tariff document and the community's contracted power (kW) per power period."""

    model_config = ConfigDict(strict=True, extra="forbid")

    tariff: dict[str, Any] = Field(description="a patio-tariff/v1 document (docs/tariffs.md)")
    contracted_kW: dict[Annotated[str, StringConstraints(max_length=32)], DecimalText] = {}


def _recorded(gateway: Any, community_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The community's current tariff change and its time zone, from the registry entries."""
    with gateway.log.engine.connect() as conn:
        rows = (
            DriverCursor(conn)
            .execute(
                "SELECT idx, entry FROM entries WHERE device_id = ? ORDER BY idx",
                (REGISTRY_DEVICE,),
            )
            .fetchall()
        )
    found = []
    for index, data in rows:
        try:
            payload = parse_json(bytes(data), what="entry").get("payload")
        except (FormatError, AttributeError):
            payload = None
        found.append(RegistryEntry(index=index, payload=payload))
    registry, _ = replay(found)
    community = registry.community(community_id)
    return registry.tariffs.get(community_id), None if community is None else community.time_zone


def _keeps_the_past(old: Tariff, new: Tariff, today: date) -> None:
    """Refuse a document that prices any day before `today` differently from `old`."""

    def until_today(end: date | None) -> date:
        return today if end is None else min(end, today)

    before = {v.valid_from: v for v in old.versions if v.valid_from < today}
    for version in new.versions:
        if version.valid_from < today and version.valid_from not in before:
            raise Problem(409, "Would rewrite past costs",
                          f"a new version may start today ({today}) at the earliest, not "
                          f"{version.valid_from}")  # fmt: skip
    mine = {version.valid_from: version for version in new.versions}
    for start, version in before.items():
        kept = mine.get(start)
        if kept is None:
            raise Problem(409, "Would rewrite past costs",
                          f"the version valid from {start} is missing")  # fmt: skip
        same = kept.model_copy(update={"valid_to": None}) == version.model_copy(
            update={"valid_to": None}
        )
        if not same or until_today(kept.valid_to) != until_today(version.valid_to):
            raise Problem(409, "Would rewrite past costs",
                          f"the version valid from {start} prices days before today "
                          f"({today}) differently")  # fmt: skip


@router.put(
    "/communities/{community_id}/tariff",
    summary="Set a community's tariff (recorded on the log)",
    description='Body: {"tariff": a patio-tariff/v1 document, "contracted_kW": '
    "{power period: decimal string}}. Every power period the tariff charges a power term for "
    "needs a contracted power. Versions already in force before today keep their prices.",
)
async def set_tariff(
    community_id: str, request: Request, gateway: GatewayDep, _: AdminDep
) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_TARIFF_BYTES:
        raise Problem(413, "Too large", f"a tariff change is at most {MAX_TARIFF_BYTES} bytes")
    try:
        body = TariffChange.model_validate(parse_json(raw, what="the body"))
    except FormatError as exc:
        raise Problem(422, "Invalid request", str(exc)) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Problem(422, "Invalid request", f"{where}: {first['msg']}") from exc
    try:
        tariff = parse_tariff(canonical_json(body.tariff))
        power = contracted_power(body.contracted_kW)
    except (TariffError, ReportError) as exc:
        raise Problem(422, "Invalid tariff", str(exc)) from exc
    for version in tariff.versions:
        for period in version.power_term_per_kW_day:
            if period not in power:
                raise Problem(422, "Invalid tariff",
                              f"contracted_kW.{period}: the tariff charges a power term for "
                              f"{period}, give the contracted power")  # fmt: skip
    current, time_zone = await asyncio.to_thread(_recorded, gateway, community_id)
    if time_zone is None:
        raise Problem(404, "Not found", f"no community {community_id!r}")
    if current is not None:
        today = datetime.now(UTC).astimezone(zone_named(time_zone)).date()
        _keeps_the_past(parse_tariff(canonical_json(current["tariff"])), tariff, today)
    subject = {
        "id": community_id,
        "tariff": body.tariff,
        "contracted_kW": {p: f"{v:f}" for p, v in sorted(power.items())},
    }
    tag, _recorded_change = await change(gateway, "set_community_tariff", subject)
    return {**subject, "tariff_sha256": tariff_digest(body.tariff), "log_tag_id": tag}


@router.get("/communities/{community_id}/tariff", summary="A community's current tariff")
async def get_tariff(community_id: str, gateway: GatewayDep, caller: ReaderDep) -> dict[str, Any]:
    if not caller.can_read(community_id):
        raise Problem(403, "Forbidden", f"this key may not read community {community_id!r}")
    current, time_zone = await asyncio.to_thread(_recorded, gateway, community_id)
    if time_zone is None:
        raise Problem(404, "Not found", f"no community {community_id!r}")
    if current is None:
        raise Problem(404, "Not found", f"community {community_id!r} has no tariff")
    return {**current, "tariff_sha256": tariff_digest(current["tariff"])}
