"""Summed rollups (contracts/energy/aggregate.py) give exactly the report hourly ones give."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.energy.aggregate import merge, units
from contracts.energy.errors import EnergyError
from contracts.energy.hourly import HourlyRollup
from contracts.energy.periods import (
    Period,
    PeriodKind,
    custom_period,
    local_midnight,
    period_of,
    zone_named,
)
from contracts.energy.report import build_report
from contracts.energy.tariff import shipped_tariff

ROLES = {
    "meter": {"import": "grid_import", "export": "grid_export"},
    "pv": {"solar": "generation"},
    "flat": {"use": "consumption"},
}
SENSORS = [(d, s) for d, sensors in ROLES.items() for s in sensors]
START = datetime(2025, 1, 1, tzinfo=UTC)
HOURS = 470 * 24  # to mid April 2026


@st.composite
def rollups(draw: st.DrawFn) -> list[HourlyRollup]:
    seen: set[tuple[str, str, int]] = set()
    rows = []
    # Clustered hours (so units hold several) plus a few anywhere.
    centre = draw(st.integers(0, HOURS - 1))
    for _ in range(draw(st.integers(0, 120))):
        device, sensor = draw(st.sampled_from(SENSORS))
        near = draw(st.booleans())
        hour = (
            min(HOURS - 1, max(0, centre + draw(st.integers(-900, 900))))
            if near
            else draw(st.integers(0, HOURS - 1))
        )
        if (device, sensor, hour) in seen:
            continue
        seen.add((device, sensor, hour))
        minutes = draw(st.integers(0, 60))
        peak = draw(st.one_of(st.sampled_from([1000, 5000]), st.integers(0, 9_000_000)))  # ties
        at = START + timedelta(hours=hour)
        rows.append(
            HourlyRollup(
                device_id=device,
                sensor=sensor,
                hour=at,
                minutes=minutes,
                energy_mwh=draw(st.one_of(st.none(), st.integers(0, 9_000_000))),
                peak_mw=peak,
                peak_minute=at + timedelta(minutes=draw(st.integers(0, 59))),
                first_idx=hour,
                last_idx=hour + minutes,
            )
        )
    return rows


@settings(max_examples=100, deadline=None)
@given(
    data=rollups(),
    kind=st.sampled_from(list(PeriodKind)),
    offset=st.integers(0, HOURS // 24 - 1),
    length=st.integers(0, 80),
    tariff_id=st.sampled_from(["mk-evn-home", "es-2.0td", None]),
    as_of_hours=st.integers(0, HOURS + 200),
)
def test_summed_rollups_give_the_same_report(
    data: list[HourlyRollup],
    kind: PeriodKind,
    offset: int,
    length: int,
    tariff_id: str | None,
    as_of_hours: int,
) -> None:
    zone = zone_named("Europe/Skopje" if tariff_id == "mk-evn-home" else "Europe/Madrid")
    tariff = shipped_tariff(tariff_id) if tariff_id else None
    first = date(2025, 1, 1) + timedelta(days=offset)
    if kind is PeriodKind.CUSTOM:
        period = custom_period(first, first + timedelta(days=length), zone)
    else:
        period = period_of(kind, first, zone)
    as_of = START + timedelta(hours=as_of_hours, minutes=as_of_hours % 60)
    common = {
        "roles": ROLES,
        "period": period,
        "tariff": tariff,
        "contracted_kw": {"P1": Decimal("3.45"), "P2": Decimal("3.45")},
        "as_of": as_of,
    }
    try:
        expected: object = build_report(rollups=data, **common)
    except EnergyError as exc:  # e.g. a period the tariff cannot price
        expected = repr(exc)
    try:
        summed = merge(data, units(period, tariff, as_of))
        got: object = build_report(rollups=summed, **common)
    except EnergyError as exc:
        got = repr(exc)
    assert got == expected


def test_a_day_sums_its_comparisons_per_tariff_period() -> None:
    """A day's hours are its own units; the previous day's and the year before's are summed
    per tariff period (their totals alone are written), with the same report."""
    zone = zone_named("Europe/Madrid")
    period = period_of(PeriodKind.DAY, date(2026, 3, 10), zone)  # a Tuesday
    as_of = datetime(2026, 3, 12, tzinfo=UTC)
    hours = {  # and the hours either side, outside every period
        local_midnight(day, zone) + timedelta(hours=hour)
        for day in (date(2026, 3, 10), date(2026, 3, 9), date(2025, 3, 10))
        for hour in range(-1, 25)
    }
    data = [
        HourlyRollup(device, sensor, at, 60, 1000 * (at.hour % 7 + 1), 5000, at, 0, 0)
        for at in sorted(hours)
        for device, sensor in SENSORS
    ]
    for tariff_id in ("es-2.0td", "mk-evn-home", None):
        tariff = shipped_tariff(tariff_id) if tariff_id else None
        unit_of = units(period, tariff, as_of)
        summed = merge(data, unit_of)
        common = {"roles": ROLES, "period": period, "tariff": tariff, "as_of": as_of}
        kw = {"contracted_kw": {"P1": Decimal("3.45"), "P2": Decimal("3.45")}}
        assert build_report(rollups=summed, **common, **kw) == build_report(
            rollups=data, **common, **kw
        )
        start, end = _seconds(period)
        assert {unit_of[hour] for hour in range(start, end, 3600)} == set(range(start, end, 3600))
        # 2.0TD: P1, P2 and P3 on each weekday compared; EVN: its two rates; no tariff: one
        compared = {unit_of[hour] for hour in _compared(period)}
        assert len(compared) == {"es-2.0td": 6, "mk-evn-home": 4, None: 2}[tariff_id]


def _seconds(period: Period) -> tuple[int, int]:
    return int(period.utc_start.timestamp()), int(period.utc_end.timestamp())


def _compared(period: Period) -> set[int]:
    """The hours of the previous period and the year before, as Unix seconds."""
    return {
        hour
        for earlier in (period.previous(), period.year_before())
        for hour in range(*_seconds(earlier), 3600)
    }
