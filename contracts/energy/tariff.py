"""Tariffs as versioned data: the `patio-tariff/v1` file format and what each hour costs.

A tariff file is JSON validated by the strict models below (`tariff.schema.json` beside
this module is their JSON Schema, exported for people writing tariffs). It holds a list of
versions, each valid for local dates `valid_from` (inclusive) to `valid_to` (exclusive, or
open); every hour is priced by the version valid at its local date, so adding a version
never changes the cost of an earlier hour.

A version has a calendar that maps each local clock hour to a period name (a schedule per
day of the week and for public holidays, hour ranges `[start, end)` that cover 0..24), an
energy price per period (flat, or blocks that fill over the local calendar month), a power
term per kW per day per power period, fixed charges per day or per month, and an export
compensation per kWh. Amounts are decimal strings, never JSON numbers, so no binary float
ever touches a price.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from contracts.energy.errors import MissingHolidayData, TariffError

DayKey = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]
WEEKDAYS: tuple[DayKey, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # weekday()
MWH_PER_KWH = 1_000_000
_DECIMAL_TEXT = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")


def _decimal_text(value: object) -> Decimal:
    """A decimal amount written as a JSON string, e.g. "0.1330"; numbers are refused."""
    if not isinstance(value, str) or not _DECIMAL_TEXT.match(value):
        raise ValueError('an amount is a decimal string such as "0.1330", not a JSON number')
    return Decimal(value)


Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_text),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_TEXT.pattern}),
]
PeriodName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class HourRange(_Strict):
    """Local clock hours `start <= hour < end` belong to `period`."""

    start: Annotated[int, Field(ge=0, le=23)]
    end: Annotated[int, Field(ge=1, le=24)]
    period: PeriodName


class Calendar(_Strict):
    """Which period each local hour is in: a schedule per weekday and for public holidays."""

    days: dict[DayKey, str]
    schedules: dict[str, list[HourRange]]
    holidays: dict[Annotated[str, Field(pattern=r"^[0-9]{4}$")], list[date]] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Calendar:
        missing = [day for day in WEEKDAYS if day not in self.days]
        if missing:
            raise ValueError(f"calendar.days has no schedule for {', '.join(missing)}")
        for day, name in self.days.items():
            if name not in self.schedules:
                raise ValueError(f"calendar.days.{day} names unknown schedule {name!r}")
        for name, ranges in self.schedules.items():
            hour = 0
            for span in sorted(ranges, key=lambda r: r.start):
                if span.start != hour or span.end <= span.start:
                    raise ValueError(
                        f"schedule {name!r} must cover hours 0 to 24 once, in ranges "
                        f"[start, end); it breaks at hour {hour}"
                    )
                hour = span.end
            if hour != 24:
                raise ValueError(f"schedule {name!r} stops at hour {hour}, not 24")
        for year, days in self.holidays.items():
            strays = [d.isoformat() for d in days if d.year != int(year)]
            if strays:
                raise ValueError(f"holidays[{year}] lists dates of another year: {strays}")
        if "holiday" not in self.days and self.holidays:
            raise ValueError("calendar.holidays is given but calendar.days has no `holiday`")
        return self

    def periods(self) -> set[str]:
        """Every period name the schedules use."""
        return {span.period for ranges in self.schedules.values() for span in ranges}


class Block(_Strict):
    """Energy up to `up_to_kWh` of the month (cumulative; null for the last block) at a price."""

    up_to_kWh: Amount | None
    price_per_kWh: Amount


class EnergyPrice(_Strict):
    """The price of a kWh in one period: flat, or by monthly consumption block."""

    price_per_kWh: Amount | None = None
    blocks: list[Block] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> EnergyPrice:
        if (self.price_per_kWh is None) == (self.blocks is None):
            raise ValueError("an energy price has exactly one of `price_per_kWh` or `blocks`")
        if self.blocks is not None:
            if not self.blocks or self.blocks[-1].up_to_kWh is not None:
                raise ValueError("the last block has `up_to_kWh: null` (no upper limit)")
            bounds = [b.up_to_kWh for b in self.blocks[:-1]]
            previous = Decimal(0)
            for bound in bounds:
                if bound is None or bound <= previous:
                    raise ValueError("block limits `up_to_kWh` must increase, null only last")
                if (bound * MWH_PER_KWH) % 1:
                    raise ValueError(f"block limit {bound} kWh is finer than a milliwatt-hour")
                previous = bound
        return self


class FixedCharge(_Strict):
    """A charge that accrues with time, whatever the energy: per local day or calendar month."""

    name: str
    per: Literal["day", "month"]
    amount: Amount


@dataclass(frozen=True)
class PricedHour:
    """What one local hour is under a tariff: the version valid then and the period it is in."""

    version: TariffVersion
    period: str


class TariffVersion(_Strict):
    """Prices and calendar valid for local dates `valid_from` to `valid_to` (exclusive)."""

    valid_from: date
    valid_to: date | None = None
    notes: str = ""
    calendar: Calendar
    energy: dict[PeriodName, EnergyPrice]
    power_term_per_kW_day: dict[PeriodName, Amount] = {}
    fixed_charges: list[FixedCharge] = []
    export_price_per_kWh: Amount | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TariffVersion:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError(f"valid_to {self.valid_to} is not after valid_from {self.valid_from}")
        unpriced = self.calendar.periods() - set(self.energy)
        if unpriced:
            raise ValueError(f"no energy price for period(s) {sorted(unpriced)}")
        return self

    def has_blocks(self) -> bool:
        """Whether any period is priced by monthly blocks."""
        return any(price.blocks is not None for price in self.energy.values())


class Tariff(_Strict):
    """A `patio-tariff/v1` file: who publishes the prices, the currency, and the versions."""

    format: Literal["patio-tariff/v1"]
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    name: str
    source: str
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    minor_unit_digits: Annotated[int, Field(ge=0, le=4)]
    versions: Annotated[list[TariffVersion], Field(min_length=1)]

    @model_validator(mode="after")
    def _ordered(self) -> Tariff:
        for earlier, later in pairwise(self.versions):
            if earlier.valid_to is None or earlier.valid_to > later.valid_from:
                raise ValueError(
                    f"versions must be in order without overlap: the one from "
                    f"{earlier.valid_from} must end by {later.valid_from}"
                )
        return self

    def version_on(self, day: date) -> TariffVersion:
        """The version valid on local date `day`, or a TariffError."""
        for version in self.versions:
            if version.valid_from <= day and (version.valid_to is None or day < version.valid_to):
                return version
        raise TariffError(f"tariff {self.id} has no version valid on {day.isoformat()}")

    def has_blocks(self) -> bool:
        """Whether any version prices energy by monthly blocks."""
        return any(version.has_blocks() for version in self.versions)

    def hours_on(self, day: date) -> tuple[PricedHour, ...]:
        """The version and period of each local clock hour 0..23 of local date `day` (a report
        prices thousands of hours: its callers work each day out once)."""
        version = self.version_on(day)
        calendar = version.calendar
        schedule = calendar.days[WEEKDAYS[day.weekday()]]
        if "holiday" in calendar.days:
            holidays = calendar.holidays.get(str(day.year))
            if holidays is None:
                raise MissingHolidayData(
                    f"tariff {self.id} has no public holiday data for {day.year}; add "
                    f'calendar.holidays["{day.year}"] to price {day.isoformat()}'
                )
            if day in holidays:
                schedule = calendar.days["holiday"]
        priced: dict[str, PricedHour] = {}  # one per period: the day's 24 hours share a few
        hours: list[PricedHour] = []
        # Validated (Calendar._consistent) to cover hours 0-24 once, in any order.
        for span in sorted(calendar.schedules[schedule], key=lambda span: span.start):
            found = priced.setdefault(span.period, PricedHour(version, span.period))
            hours += [found] * (span.end - span.start)
        return tuple(hours)


def parse_tariff(text: str | bytes) -> Tariff:
    """The tariff in JSON `text`, or a TariffError saying what is wrong with it."""
    try:
        return Tariff.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise TariffError(f"invalid tariff at {where}: {first['msg']}") from exc


@cache
def shipped_tariff(tariff_id: str) -> Tariff:
    """One of the tariffs shipped in `contracts/energy/tariffs/` by its id."""
    folder = resources.files("contracts.energy") / "tariffs"
    for item in folder.iterdir():
        if item.name.endswith(".json"):
            tariff = parse_tariff(item.read_bytes())
            if tariff.id == tariff_id:
                return tariff
    raise TariffError(f"no shipped tariff with id {tariff_id!r}")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a tariff file (what `tariff.schema.json` holds)."""
    schema = Tariff.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://patio-ledger.example/schemas/patio-tariff-v1.json"
    return schema


def price_hour(tariff: Tariff, local: datetime) -> PricedHour:
    """The version and period of the hour starting at `local` (an aware local datetime)."""
    return tariff.hours_on(local.date())[local.hour]
