"""An energy report from hourly rollups: per bucket, in total, per device, with costs.

`build_report` returns a JSON-ready dict (format `patio-report/v1`; `docs/reports.md`
documents every field). Numbers that are summed are exact decimal strings: energy in kWh
with 6 decimals (integer mWh scaled), money in the tariff's minor unit. Its shape::

    {"format": "patio-report/v1",
     "period": {"kind", "label", "from", "to", "time_zone", "bucket", "start", "end"},
     "as_of": UTC instant up to which minutes are expected and charges accrue,
     "billed_role": "grid_import" | "consumption",
     "tariff": {"id", "currency", "minor_unit_digits", "rounding", "contracted_kW"} | null,
     "buckets": [{"start", "end", **metrics}],     # local ISO 8601 with offsets
     "total": metrics,
     "devices": [{"device_id", "buckets": [{"start", "end", **device_metrics}],
                  "total": device_metrics}],
     "community_charges": {"buckets": [{"start", "end", "power_term", "fixed"}],
                           "total": {"power_term", "fixed"}} | null,
     "comparison": {"previous": comparison, "year_before": comparison}}

metrics: `generated_kWh`, `consumed_kWh`, `grid_import_kWh`, `grid_export_kWh`, `net_kWh`,
`self_consumption`, `self_sufficiency` ({"ratio", "reason"}), `peak_demand`,
`peak_generation` ({"kW", "at", "device_id", "sensor"} or null), `expected_minutes`,
`missing_minutes`, `cost` ({"energy": {period: amount}, "power_term", "fixed",
"export_compensation", "total"} or null without a tariff).

Definitions (Home Assistant's energy dashboard, https://www.home-assistant.io/dashboards/energy/
and its gauge cards `hui-energy-solar-consumed-gauge-card.ts`,
`hui-energy-self-sufficiency-gauge-card.ts` in home-assistant/frontend):

- self-consumed solar = max(0, generated − grid_export) / generated; null when nothing was
  generated or no grid_export sensor is declared.
- self-sufficiency = 1 − min(1, grid_import / consumption), where consumption is the
  measured `consumption` sensors when any is declared, otherwise grid_import + generated −
  grid_export (Home Assistant's "used total"); null without a grid_import sensor or when
  consumption is not positive.
- net = grid_import − grid_export (positive: the community drew from the grid).
- missing minutes = expected device-sensor-minutes − minutes present, over the sensors with
  an energy role (generation, consumption, grid_import, grid_export), counting only
  minutes before `as_of`. Missing minutes are never filled with zero.
- billed energy: grid_import when any device declares a grid_import sensor, otherwise
  consumption (a community of plug meters); exported energy earns the export price.
- rounding: each cost part (a device's energy of one period, a device's export
  compensation, the community's power term, its fixed charges) is rounded to the minor unit
  once over the whole report, half away from zero, and that rounded amount is spread over
  the buckets by largest remainder (`cost.allocate`); every other total is a sum of those
  parts, so buckets and the per-device breakdown add up exactly to the totals.
- comparison: percent change = (current − earlier) / |earlier| × 100, 2 decimals; null with
  a reason when the earlier period has no readings, the earlier value is zero, or its cost
  cannot be computed.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import islice
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from contracts.energy.cost import (
    COMMUNITY,
    EXPORT,
    ROUNDING_RULE,
    bucket_costs,
    costing_start,
    round_half_away,
    round_money,
)
from contracts.energy.errors import ReportError, TariffError
from contracts.energy.hourly import HourlyRollup
from contracts.energy.periods import HOUR, Bucket, BucketFinder, Period
from contracts.energy.tariff import Tariff

FORMAT = "patio-report/v1"
ENERGY_ROLES = ("generation", "consumption", "grid_import", "grid_export")
ROLES = (*ENERGY_ROLES, "temperature", "switch", "other")  # issue 11: the declared sensor roles
COMPARED = ("generated_kWh", "consumed_kWh", "grid_import_kWh", "grid_export_kWh", "net_kWh")
MINUTE = timedelta(minutes=1)
_KEY = operator.itemgetter(0, 1, 2)  # a rollup's (device, sensor, hour)
_LATEST = datetime.max.replace(tzinfo=UTC)  # a peak without a minute sorts last
_GENERATION, _EXPORT = ENERGY_ROLES.index("generation"), ENERGY_ROLES.index("grid_export")

Roles = Mapping[str, Mapping[str, str]]  # device id -> sensor name -> role


def kwh(mwh: int) -> str:
    """Integer milliwatt-hours as exact kWh text with 6 decimals."""
    if mwh >= 0:  # the common case, without abs and a sign test (a day writes 8,000)
        return f"{mwh // 1_000_000}.{mwh % 1_000_000:06d}"
    whole, fraction = divmod(abs(mwh), 1_000_000)
    return f"{'-' if mwh < 0 else ''}{whole}.{fraction:06d}"


def rollup_ranges(period: Period, tariff: Tariff | None) -> list[tuple[datetime, datetime]]:
    """The UTC ranges `[start, end)` of the rollups `build_report` needs, merged, in order.

    One per period computed (the period, the previous one, the year before), each reaching
    back to the first of its month when the tariff prices energy by monthly blocks.
    """
    spans = []
    for target in (period, period.previous(), period.year_before()):
        start = target.utc_start
        if tariff is not None:
            start = costing_start(tariff, period.zone, start)
        spans.append((start, target.utc_end))
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


@dataclass(slots=True)
class _Peak:
    mw: int
    minute: datetime | None
    device_id: str
    sensor: str

    def beats(self, other: _Peak | None) -> bool:
        """Higher power wins; ties go to the earliest minute, then device and sensor."""
        if other is None:
            return True
        if self.mw != other.mw:  # the usual answer, without building tuples
            return self.mw > other.mw
        mine, theirs = self.minute or _LATEST, other.minute or _LATEST
        if mine != theirs:
            return mine < theirs
        return (self.device_id, self.sensor) < (other.device_id, other.sensor)


class _Tally:
    """Sums for one device (or the community) over one bucket."""

    __slots__ = ("expected", "mwh", "peak_demand", "peak_generation", "present")

    def __init__(self, expected: int = 0) -> None:
        # mWh per role in ENERGY_ROLES order: a list, a day's report makes 1,200 tallies
        self.mwh = [0, 0, 0, 0]
        self.present = 0
        self.expected = expected
        self.peak_demand: _Peak | None = None
        self.peak_generation: _Peak | None = None

    @staticmethod
    def of(tallies: Iterable[_Tally]) -> _Tally:
        """The sum of `tallies`, as `add`ing each in turn to a new tally would give."""
        generation = consumption = grid_import = grid_export = present = expected = 0
        demand: _Peak | None = None
        supply: _Peak | None = None
        for tally in tallies:
            generated, consumed, imported, exported = tally.mwh
            generation += generated
            consumption += consumed
            grid_import += imported
            grid_export += exported
            present += tally.present
            expected += tally.expected
            peak = tally.peak_demand  # the power compared inline: beats() only on a tie
            if peak is not None and (
                demand is None
                or peak.mw > demand.mw
                or (peak.mw == demand.mw and peak.beats(demand))
            ):
                demand = peak
            peak = tally.peak_generation
            if peak is not None and (
                supply is None
                or peak.mw > supply.mw
                or (peak.mw == supply.mw and peak.beats(supply))
            ):
                supply = peak
        total = _Tally()
        total.mwh = [generation, consumption, grid_import, grid_export]
        total.present, total.expected = present, expected
        total.peak_demand, total.peak_generation = demand, supply
        return total


class _Computed:
    """Everything about one period before it is written out."""

    def __init__(
        self,
        *,
        period: Period,
        rollups: Mapping[datetime, list[HourlyRollup]],
        roles: Roles,
        tariff: Tariff | None,
        contracted_kw: Mapping[str, Decimal],
        as_of: datetime,
        per_device: bool = True,
    ) -> None:
        """`per_device=False` (a comparison, whose total alone is written): one tally and
        one amount per cost part for the whole period, `tallies[0][device]` being the same
        for every device."""
        self.period = period
        self.buckets = period.buckets()
        self.tariff = tariff
        self.devices = sorted(
            device
            for device, sensors in roles.items()
            if any(role in ENERGY_ROLES for role in sensors.values())
        )
        declared = {role for sensors in roles.values() for role in sensors.values()}
        self.declared = declared
        self.billed_role = "grid_import" if "grid_import" in declared else "consumption"
        self.per_device = per_device
        bucket_of = BucketFinder(self.buckets)

        sensors = {
            device: sum(role in ENERGY_ROLES for role in roles[device].values())
            for device in self.devices
        }
        if per_device:
            self.tallies = []
            for bucket in self.buckets:
                minutes = _elapsed_minutes(bucket.utc_start, bucket.utc_end, as_of)
                self.tallies.append(
                    {device: _Tally(count * minutes) for device, count in sensors.items()}
                )
        else:  # the devices' one tally
            minutes = sum(_elapsed_minutes(b.utc_start, b.utc_end, as_of) for b in self.buckets)
            shared = _Tally(sum(sensors.values()) * minutes)
            self.tallies = [dict.fromkeys(self.devices, shared)]

        billed: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
        exported: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
        role_of = {  # -> the role's index in ENERGY_ROLES
            (device, sensor): ENERGY_ROLES.index(role)
            for device, sensors in roles.items()
            for sensor, role in sensors.items()
            if role in ENERGY_ROLES
        }
        first = (
            period.utc_start
            if tariff is None
            else costing_start(tariff, period.zone, period.utc_start)
        )
        last = period.utc_end
        readings = 0
        billed_role = ENERGY_ROLES.index(self.billed_role)
        elapsed = as_of - HOUR  # an hour starting by then has fully elapsed
        for hour in sorted(hour for hour in rollups if first <= hour < last):
            index = bucket_of(hour)  # < 0: before the period, needed only for tariff blocks
            tallies = None if index < 0 else self.tallies[index if per_device else 0]
            # Only an hour that has not fully elapsed caps its minutes (a summed unit of
            # contracts/energy/aggregate.py holds more than 60 of an elapsed hour's kind).
            cap = None if hour <= elapsed else _elapsed_minutes(hour, hour + HOUR, as_of)
            # all 11 fields of HourlyRollup named: a starred target would build a list each
            for device, sensor, _, minutes, mwh, mw, minute, _, _, _, _ in rollups[hour]:
                role = role_of.get((device, sensor))
                if role is None:
                    continue
                energy = mwh or 0
                if role == billed_role:
                    billed[device][hour] += energy
                elif role == _EXPORT:
                    exported[device][hour] += energy
                if tallies is None:
                    continue
                tally = tallies[device]
                tally.mwh[role] += energy
                tally.present += minutes if cap is None else min(minutes, cap)
                readings += minutes
                if mw is None or role == _EXPORT:
                    continue
                best = tally.peak_generation if role == _GENERATION else tally.peak_demand
                if best is not None and mw < best.mw:
                    continue
                peak = _Peak(mw, minute, device, sensor)
                if best is None or mw > best.mw or (
                    (best.minute is None
                     or (peak.minute is not None and peak.minute <= best.minute))
                    and peak.beats(best)
                ):  # fmt: skip
                    if role == _GENERATION:
                        tally.peak_generation = peak
                    else:
                        tally.peak_demand = peak
        self.readings = readings

        # Rounded cost parts in minor units: (device, part) -> one amount per bucket; part
        # is an energy period or "export_compensation"; the community's under device "".
        self.parts: dict[tuple[str, str], list[int]] | None = None
        self.money = _Money(0)
        if tariff is not None:
            costs = bucket_costs(
                tariff=tariff,
                zone=period.zone,
                buckets=self.buckets,
                billed=billed,
                exported=exported,
                contracted_kw=contracted_kw,
                as_of=as_of,
                whole=not per_device,
            )
            self.parts = costs.rounded(tariff.minor_unit_digits)
            self.money = _Money(tariff.minor_unit_digits)
            self.energy_parts: dict[str, list[tuple[str, list[int]]]] = defaultdict(list)
            for (owner, part), amounts in sorted(self.parts.items()):
                if owner != COMMUNITY and part != EXPORT:
                    self.energy_parts[owner].append((part, amounts))


def _elapsed_minutes(start: datetime, end: datetime, as_of: datetime) -> int:
    """Minutes of `[start, end)` before `as_of`."""
    return max(0, (min(end, as_of) - start) // MINUTE)


def _ratio(numerator: int, denominator: int) -> str:
    """numerator / denominator (numerator >= 0, denominator > 0) to 4 decimals, as the
    Decimal of `round_money` prints."""
    units = round_half_away(numerator * 10_000, denominator)
    return f"{units // 10_000}.{units % 10_000:04d}"


def _ratios(mwh: list[int], declared: set[str]) -> dict[str, dict[str, str | None]]:
    generated, measured, imported, exported = mwh
    consumption: dict[str, str | None]
    production: dict[str, str | None]
    if "generation" not in declared:
        production = {"ratio": None, "reason": "no generation sensor is declared"}
    elif "grid_export" not in declared:
        production = {"ratio": None, "reason": "no grid_export sensor is declared"}
    elif generated <= 0:
        production = {"ratio": None, "reason": "nothing was generated"}
    else:
        used = min(max(0, generated - exported), generated)
        production = {"ratio": _ratio(used, generated), "reason": None}
    used_total = measured if "consumption" in declared else imported + generated - exported
    if "grid_import" not in declared:
        consumption = {"ratio": None, "reason": "no grid_import sensor is declared"}
    elif used_total <= 0:
        consumption = {"ratio": None, "reason": "no consumption"}
    else:
        local = used_total - min(imported, used_total)  # 1 - min(1, imported / used_total)
        consumption = {"ratio": _ratio(local, used_total), "reason": None}
    return {"self_consumption": production, "self_sufficiency": consumption}


class _Texts:
    """The text of each kWh amount and peak minute written, worked out once: a day's report
    writes 7,700 amounts, most of them zero, and 2,500 peaks."""

    __slots__ = ("at", "kwh", "zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.kwh = _Kwh()
        self.at = _At(zone)

    def peak(self, peak: _Peak) -> dict[str, str | None]:
        return {
            "kW": self.kwh[peak.mw],  # mW / 10^6 = kW, the same scaling as mWh to kWh
            "at": self.at[peak.minute],
            "device_id": peak.device_id,
            "sensor": peak.sensor,
        }

    def energy(self, tally: _Tally, times: Mapping[str, str] = MappingProxyType({})) -> Any:
        """A tally's metrics as JSON, after `times` (a row's start and end)."""
        texts = self.kwh
        generated, consumed, imported, exported = tally.mwh
        demand, generation = tally.peak_demand, tally.peak_generation
        return {
            **times,
            "generated_kWh": texts[generated],
            "consumed_kWh": texts[consumed],
            "grid_import_kWh": texts[imported],
            "grid_export_kWh": texts[exported],
            "net_kWh": texts[imported - exported],
            "peak_demand": None if demand is None else self.peak(demand),
            "peak_generation": None if generation is None else self.peak(generation),
            "expected_minutes": tally.expected,
            "missing_minutes": tally.expected - tally.present,
        }


class _At(dict[datetime | None, str | None]):
    """The local time of each peak minute asked for (None for none), worked out once."""

    def __init__(self, zone: ZoneInfo) -> None:
        super().__init__({None: None})
        self.zone = zone

    def __missing__(self, minute: datetime | None) -> str | None:
        assert minute is not None  # None is a key from the start
        text = self[minute] = minute.astimezone(self.zone).isoformat()
        return text


class _Kwh(dict[int, str]):
    """`kwh` of each amount asked for, worked out on the first ask."""

    def __missing__(self, mwh: int) -> str:
        text = self[mwh] = kwh(mwh)
        return text


class _Money(dict[int, str]):
    """The text of each amount in minor units, as a Decimal of that many decimals prints,
    worked out on the first ask (a day's report writes 3,000, most of them zero)."""

    def __init__(self, digits: int) -> None:
        super().__init__()
        self.digits = digits
        self.scale = 10**digits

    def __missing__(self, units: int) -> str:
        if self.digits == 0:
            text = str(units)
        else:
            whole, fraction = divmod(abs(units), self.scale)
            text = f"{'-' if units < 0 else ''}{whole}.{fraction:0{self.digits}d}"
        self[units] = text
        return text


# Where nothing has been added to an export compensation (a community without devices),
# the report has always written Decimal(0) as it prints: "0", whatever the minor unit.
_NO_EXPORT = "0"


def _cost_json(
    money: _Money,
    energy: Mapping[str, int],
    export: int,
    charges: Mapping[str, int] | None,
    *,
    devices: bool = True,
) -> Any:
    """Summed rounded cost parts (energy per period, export compensation) and community
    charges, in minor units, as JSON."""
    total = sum(energy.values()) + export
    out: dict[str, Any] = {"energy": {p: money[a] for p, a in sorted(energy.items())}}
    out["export_compensation"] = money[export] if devices else _NO_EXPORT
    if charges is not None:
        out["power_term"] = money[charges["power_term"]]
        out["fixed"] = money[charges["fixed"]]
        total += charges["power_term"] + charges["fixed"]
    out["total"] = money[total]
    return out


class _Written:
    """A period written out: bucket rows, total, devices, community charges."""

    def __init__(self, computed: _Computed, *, detail: bool = True) -> None:
        """`detail=False` (a comparison): only `total` and `readings` are filled."""
        period, devices = computed.period, computed.devices
        self.readings = computed.readings
        if not detail:
            self._total_only(computed)
            return
        texts = _Texts(period.zone)
        money = computed.money
        count = len(computed.buckets)
        # Rounded cost parts in minor units: per device its energy parts (name, one amount
        # per bucket) in name order, its export compensation and its total per bucket; the
        # same summed over the devices per bucket. Integer sums: any order gives the same.
        parts = computed.parts
        zeros = [0] * count
        energy_parts: dict[str, list[tuple[str, list[int]]]] = {}
        exports: dict[str, list[int]] = {}
        device_sums: dict[str, list[int]] = {}
        bucket_energy: dict[str, list[int]] = {}
        bucket_export = zeros
        charges: dict[str, list[int]] = {}
        if parts is not None:
            for device in devices:
                own = energy_parts[device] = computed.energy_parts.get(device, [])
                exports[device] = parts.get((device, EXPORT)) or zeros
                device_sums[device] = [
                    sum(column)
                    for column in zip(*(a for _, a in own), exports[device], strict=True)
                ]
                for name, amounts in own:
                    summed = bucket_energy.get(name)
                    bucket_energy[name] = (
                        amounts
                        if summed is None
                        else [a + b for a, b in zip(summed, amounts, strict=True)]
                    )
            if devices:
                bucket_export = [sum(column) for column in zip(*exports.values(), strict=True)]
            charges = {name: parts[(COMMUNITY, name)] for name in ("power_term", "fixed")}
        self.buckets: list[dict[str, Any]] = []
        self.device_rows: dict[str, list[dict[str, Any]]] = {d: [] for d in devices}
        device_rows = self.device_rows
        bucket_tallies = [_Tally.of(tallies.values()) for tallies in computed.tallies]
        charges_rows: list[dict[str, Any]] = []
        for index, bucket in enumerate(computed.buckets):
            start, end = bucket.local_start.isoformat(), bucket.local_end.isoformat()
            tallies = computed.tallies[index]
            times = {"start": start, "end": end}
            for device in devices:
                device_row: dict[str, Any] = texts.energy(tallies[device], times)
                device_row["cost"] = None
                if parts is not None:
                    energy = {}
                    for name, amounts in energy_parts[device]:
                        energy[name] = money[amounts[index]]
                    device_row["cost"] = {
                        "energy": energy,
                        "export_compensation": money[exports[device][index]],
                        "total": money[device_sums[device][index]],
                    }
                device_rows[device].append(device_row)
            tally = bucket_tallies[index]
            row: dict[str, Any] = texts.energy(tally, times)
            row.update(_ratios(tally.mwh, computed.declared))
            row["cost"] = None
            if parts is not None:
                charged = {key: values[index] for key, values in charges.items()}
                charges_rows.append({**times, **{k: money[v] for k, v in charged.items()}})
                row["cost"] = _cost_json(
                    money,
                    {name: values[index] for name, values in bucket_energy.items()},
                    bucket_export[index],
                    charged,
                    devices=bool(devices),
                )
            self.buckets.append(row)
        grand = _Tally.of(bucket_tallies)
        self.total: dict[str, Any] = texts.energy(grand)
        self.total.update(_ratios(grand.mwh, computed.declared))
        self.total["cost"] = None
        self.community_charges = None
        if parts is not None:
            charges_total = {key: sum(values) for key, values in charges.items()}
            self.total["cost"] = _cost_json(
                money,
                {name: sum(values) for name, values in bucket_energy.items()},
                sum(bucket_export),
                charges_total,
                devices=bool(devices),
            )
            self.community_charges = {
                "buckets": charges_rows,
                "total": {k: money[v] for k, v in charges_total.items()},
            }
        self.devices: list[dict[str, Any]] = []
        for device in devices:
            total: dict[str, Any] = texts.energy(
                _Tally.of([tallies[device] for tallies in computed.tallies])
            )
            total["cost"] = None
            if parts is not None:
                total["cost"] = _cost_json(
                    money,
                    {name: sum(amounts) for name, amounts in energy_parts[device]},
                    sum(exports[device]),
                    None,
                )
            self.devices.append(
                {"device_id": device, "buckets": device_rows[device], "total": total}
            )

    def _total_only(self, computed: _Computed) -> None:
        """The total as the detailed path writes it, each part summed over its buckets at
        once (integer sums: the order does not matter) instead of bucket by bucket."""
        per_bucket = None if computed.per_device else 1  # else the bucket's one tally
        grand = _Tally.of(
            tally for tallies in computed.tallies for tally in islice(tallies.values(), per_bucket)
        )
        self.total = _Texts(computed.period.zone).energy(grand)
        self.total.update(_ratios(grand.mwh, computed.declared))
        parts = computed.parts
        if parts is None:
            self.total["cost"] = None
            return
        energy: dict[str, int] = {}
        exported = 0
        for device in computed.devices:
            for part, amounts in computed.energy_parts.get(device, []):
                energy[part] = energy.get(part, 0) + sum(amounts)
            exported += sum(parts.get((device, EXPORT), ()))
        charges = {name: sum(parts[(COMMUNITY, name)]) for name in ("power_term", "fixed")}
        self.total["cost"] = _cost_json(
            computed.money, energy, exported, charges, devices=bool(computed.devices)
        )


def _times(bucket: Bucket) -> dict[str, str]:
    return {"start": bucket.local_start.isoformat(), "end": bucket.local_end.isoformat()}


def _period_json(period: Period) -> dict[str, str]:
    return {
        "kind": period.kind.value,
        "label": period.label(),
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "time_zone": period.zone.key,
        "bucket": period.bucket_size.value,
        "start": period.utc_start.astimezone(period.zone).isoformat(),
        "end": period.utc_end.astimezone(period.zone).isoformat(),
    }


def _change(current: Decimal, earlier: Decimal) -> dict[str, str | None]:
    if earlier == 0:
        return {"pct": None, "reason": "the earlier value is zero"}
    pct = (Fraction(current) - Fraction(earlier)) / abs(Fraction(earlier)) * 100
    return {"pct": f"{round_money(pct, 2):f}", "reason": None}


def _comparison(current: _Written, earlier_period: Period, compute: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"period": _period_json(earlier_period)}
    cost_error: str | None = None
    try:
        earlier = _Written(compute(earlier_period, with_tariff=True), detail=False)
    except TariffError as exc:  # e.g. no holiday data that year: energy still compares
        cost_error = f"the earlier cost cannot be computed: {exc}"
        earlier = _Written(compute(earlier_period, with_tariff=False), detail=False)
    values = {key: Decimal(earlier.total[key]) for key in COMPARED}
    out["total"] = {key: earlier.total[key] for key in COMPARED}
    earlier_cost = earlier.total["cost"]
    out["total"]["cost_total"] = earlier_cost["total"] if earlier_cost else None
    changes: dict[str, dict[str, str | None]] = {}
    for key in COMPARED:
        if earlier.readings == 0:
            changes[key] = {"pct": None, "reason": "no readings in the earlier period"}
        else:
            changes[key] = _change(Decimal(current.total[key]), values[key])
    current_cost = current.total["cost"]
    if current_cost is None:
        changes["cost_total"] = {"pct": None, "reason": "no tariff"}
    elif cost_error is not None:
        changes["cost_total"] = {"pct": None, "reason": cost_error}
    elif earlier.readings == 0:
        changes["cost_total"] = {"pct": None, "reason": "no readings in the earlier period"}
    else:
        changes["cost_total"] = _change(
            Decimal(current_cost["total"]), Decimal(earlier_cost["total"])
        )
    out["change"] = changes
    return out


def build_report(
    *,
    rollups: Iterable[HourlyRollup],
    roles: Roles,
    period: Period,
    tariff: Tariff | None,
    contracted_kw: Mapping[str, Decimal] | None = None,
    as_of: datetime,
) -> dict[str, Any]:
    """The report of `period` (see the module docstring) from rollups in `rollup_ranges`."""
    if as_of.tzinfo is None:
        raise ReportError("as_of must be an aware datetime")
    for device, sensors in roles.items():
        for sensor, role in sensors.items():
            if role not in ROLES:
                raise ReportError(f"device {device} sensor {sensor} has unknown role {role!r}")
    for power_period, power in (contracted_kw or {}).items():
        if power < 0:
            raise ReportError(f"contracted power for {power_period} is negative ({power} kW)")
    by_hour: dict[datetime, list[HourlyRollup]] = defaultdict(list)
    listed = list(rollups)
    if len(set(map(_KEY, listed))) < len(listed):  # (device, sensor, hour)
        seen: set[tuple[str, str, datetime]] = set()
        for rollup in listed:
            if rollup[:3] in seen:  # it would count that hour's energy twice
                raise ReportError(
                    f"two rollups for device {rollup.device_id} sensor {rollup.sensor} "
                    f"at {rollup.hour.isoformat()}"
                )
            seen.add(rollup[:3])
    for rollup in listed:
        by_hour[rollup.hour].append(rollup)
    kw = contracted_kw or {}
    computed: dict[tuple[date, date, bool, bool], _Computed] = {}

    def compute(target: Period, *, with_tariff: bool, per_device: bool = False) -> _Computed:
        # a year's previous is its year before: computed once
        key = (target.first, target.last, with_tariff, per_device)
        if key not in computed:
            computed[key] = _Computed(
                period=target,
                rollups=by_hour,
                roles=roles,
                tariff=tariff if with_tariff else None,
                contracted_kw=kw,
                as_of=as_of,
                per_device=per_device,
            )
        return computed[key]

    written = _Written(compute(period, with_tariff=True, per_device=True))
    return {
        "format": FORMAT,
        "period": _period_json(period),
        "as_of": as_of.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "billed_role": "grid_import" if _declares(roles, "grid_import") else "consumption",
        "tariff": None
        if tariff is None
        else {
            "id": tariff.id,
            "currency": tariff.currency,
            "minor_unit_digits": tariff.minor_unit_digits,
            "rounding": ROUNDING_RULE,
            "contracted_kW": {p: f"{v:f}" for p, v in sorted((contracted_kw or {}).items())},
        },
        "buckets": written.buckets,
        "total": written.total,
        "devices": written.devices,
        "community_charges": written.community_charges,
        "comparison": {
            "previous": _comparison(written, period.previous(), compute),
            "year_before": _comparison(written, period.year_before(), compute),
        },
    }


def _declares(roles: Roles, role: str) -> bool:
    return any(role in sensors.values() for sensors in roles.values())
