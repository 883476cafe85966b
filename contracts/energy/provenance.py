"""What a report was computed from, as the log up to one checkpoint says it.

A report is "the log up to tree size N": its inputs (each device's sensor roles, the
community's time zone, its tariff document and contracted power) are the registry replayed
from the `registry@1` entries below N, and its energy is the community's `energy_minute@1`
entries below N folded into hourly rollups (contracts/energy/minute.py). The gateway and
`patio report verify` both take the inputs from here, so they cannot disagree on them.

Entries used: the `energy_minute@1` entries with index below N of the community's devices
that are folded into an hourly rollup (an energy or power reading; contracts/energy/minute.py)
of an hour in one of the report's UTC ranges (`report.rollup_ranges`). Their count is of
distinct entries. Their digest is built from the rollups, so that the gateway combines
values it keeps per rollup instead of reading every entry (docs/reports.md#provenance):

- each rollup's `chain` is SHA-256 chained over the log tag ids (ASCII) of the entries folded
  into it, in log order, from the empty string (`minute.extend_chain`), and its `entries`
  counts those whose first rolled-up sensor (code point order) it is;
- a local day of the ranges (`local_days`) has the line "HOUR DEVICE SENSOR ENTRIES CHAIN\n"
  (hour in Unix seconds, chain in hex) per rollup, in (hour, device, sensor) order; its
  digest is SHA-256 of those lines, its count the sum of their ENTRIES;
- the report's digest is SHA-256 over "START END COUNT DIGEST\n" per day in time order
  (START and END the day's UTC bounds in Unix seconds), its count the sum of the days'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from contracts.device_types import roles as declared_roles
from contracts.energy.errors import PeriodError, ReportError, TariffError
from contracts.energy.periods import (
    Period,
    PeriodKind,
    custom_period,
    local_midnight,
    period_of,
    zone_named,
)
from contracts.energy.tariff import Tariff, parse_tariff
from ledger.encoding import canonical_json
from ledger.registry_replay import Registry

PROVENANCE_FORMAT = "patio-report-provenance/v2"


@dataclass(frozen=True, kw_only=True)
class CommunityInputs:
    """Everything besides energy a community's report depends on."""

    community_id: str
    time_zone: str
    devices: frozenset[str]  # every device registered to the community
    roles: dict[str, dict[str, str]]  # device -> reading name -> declared role
    tariff_document: dict[str, Any] | None
    tariff: Tariff | None
    contracted_kw: dict[str, Decimal]

    def json(self) -> dict[str, Any]:
        """The inputs as the report's provenance states them."""
        return {
            "community_id": self.community_id,
            "time_zone": self.time_zone,
            "roles": {device: dict(sorted(r.items())) for device, r in sorted(self.roles.items())},
            "tariff_sha256": None
            if self.tariff_document is None
            else tariff_digest(self.tariff_document),
            "tariff": self.tariff_document,
            "contracted_kW": {p: f"{v:f}" for p, v in sorted(self.contracted_kw.items())},
        }


def tariff_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the tariff document's RFC 8785 canonical JSON, hex."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def contracted_power(value: Any) -> dict[str, Decimal]:
    """Contracted kW per power period from `{"P1": "4.6"}` (ReportError when it is not)."""
    if not isinstance(value, dict):
        raise ReportError("contracted_kW must be an object of decimal strings")
    out: dict[str, Decimal] = {}
    for period, text in value.items():
        try:
            power = Decimal(text) if isinstance(text, str) else None
        except InvalidOperation:
            power = None
        if power is None or not power.is_finite() or power < 0:
            raise ReportError(f"contracted_kW.{period} must be a non-negative decimal string")
        out[str(period)] = power
    return out


def community_inputs(registry: Registry, community_id: str) -> CommunityInputs | None:
    """The community's inputs in a replayed registry; None when it has no such community."""
    community = registry.community(community_id)
    if community is None:
        return None
    devices = {d for d, state in registry.devices.items() if state.community_id == community_id}
    roles = {d: declared_roles(registry.devices[d].profile) for d in devices}
    recorded = registry.tariffs.get(community_id)
    document = None if recorded is None else recorded["tariff"]
    return CommunityInputs(
        community_id=community_id,
        time_zone=community.time_zone,
        devices=frozenset(devices),
        roles={d: r for d, r in roles.items() if r},
        tariff_document=document,
        tariff=None if document is None else parse_tariff(canonical_json(document)),
        contracted_kw={} if recorded is None else contracted_power(recorded["contracted_kW"]),
    )


DayDigest = tuple[int, str]  # (entries, SHA-256 hex) of one local day's rollups
RollupLine = tuple[int, str, str, int, bytes | None]  # hour, device, sensor, entries, chain


def local_days(
    ranges: Iterable[tuple[datetime, datetime]], zone: ZoneInfo
) -> list[tuple[int, int]]:
    """The local days of `ranges` (each starting at a local midnight) as [start, end) Unix
    seconds, in time order."""
    days = []
    for start, end in ranges:
        seconds, stop = int(start.timestamp()), int(end.timestamp())
        while seconds < stop:
            day = datetime.fromtimestamp(seconds, zone).date()
            day_end = int(local_midnight(day + timedelta(days=1), zone).timestamp())
            days.append((seconds, min(day_end, stop)))
            seconds = days[-1][1]
    return days


def day_digest(rollups: Iterable[RollupLine]) -> DayDigest | None:
    """The count and digest of one local day's rollups, given in any order; None when a
    rollup's chain is unknown (written before gateway migration g0010 over payloads since
    dropped)."""
    lines = []
    count = 0
    for hour, device, sensor, entries, chain in sorted(rollups):
        if chain is None:
            return None
        lines.append(f"{hour} {device} {sensor} {entries} {chain.hex()}\n")
        count += entries
    return count, hashlib.sha256("".join(lines).encode()).hexdigest()


def entries_digest(days: Iterable[tuple[int, int, DayDigest | None]]) -> dict[str, Any] | None:
    """The report's `entries` from its days' (start, end, day digest) in time order; None
    when a day's is unknown."""
    digest = hashlib.sha256()
    count = 0
    for start, end, day in days:
        if day is None:
            return None
        digest.update(f"{start} {end} {day[0]} {day[1]}\n".encode())
        count += day[0]
    return {"count": count, "digest": digest.hexdigest()}


def period_from_json(period: Any) -> Period:
    """The Period a report's `period` object names (PeriodError when it names none)."""
    if not isinstance(period, dict):
        raise PeriodError("the report has no period object")
    try:
        kind = PeriodKind(period["kind"])
        zone = zone_named(period["time_zone"])
        first = date.fromisoformat(period["from"])
        last = date.fromisoformat(period["to"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PeriodError(f"the report's period is malformed: {exc}") from exc
    if kind is PeriodKind.CUSTOM:
        return custom_period(first, last, zone)
    return period_of(kind, first, zone)


__all__ = [
    "PROVENANCE_FORMAT",
    "CommunityInputs",
    "TariffError",
    "community_inputs",
    "contracted_power",
    "day_digest",
    "entries_digest",
    "local_days",
    "period_from_json",
    "tariff_digest",
]
