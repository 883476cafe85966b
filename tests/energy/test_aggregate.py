"""Summed rollups (contracts/energy/aggregate.py) give exactly the report hourly ones give."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.energy.aggregate import merge, units
from contracts.energy.errors import EnergyError
from contracts.energy.hourly import HourlyRollup
from contracts.energy.periods import PeriodKind, custom_period, period_of, zone_named
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
