"""Reports from hourly rollups: hand-computed days and months, comparisons, parts = totals."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.energy.cost import allocate, round_half_away
from contracts.energy.csv import render_csv
from contracts.energy.errors import MissingHolidayData, ReportError
from contracts.energy.hourly import HourlyRollup
from contracts.energy.periods import PeriodKind, custom_period, period_of, zone_named
from contracts.energy.report import COMPARED, _Money, build_report, rollup_ranges
from contracts.energy.tariff import shipped_tariff

MADRID = zone_named("Europe/Madrid")
SKOPJE = zone_named("Europe/Skopje")
SPAIN = shipped_tariff("es-2.0td")
EVN = shipped_tariff("mk-evn-home")
HOA_ROLES = {
    "meter": {"import": "grid_import", "export": "grid_export", "temp": "temperature"},
    "pv": {"solar": "generation"},
}
CONTRACTED = {"P1": Decimal("3.45"), "P2": Decimal("3.45")}
LATER = datetime(2030, 1, 1, tzinfo=UTC)


def rollup(
    device: str, sensor: str, local: str, kwh: str, *, zone: Any = MADRID, minutes: int = 60
) -> HourlyRollup:
    hour = datetime.fromisoformat(local).replace(tzinfo=zone).astimezone(UTC)
    mwh = int(Decimal(kwh) * 1_000_000)
    return HourlyRollup(
        device_id=device,
        sensor=sensor,
        hour=hour,
        minutes=minutes,
        energy_mwh=mwh,
        peak_mw=mwh,  # an hour at constant power: peak kW = kWh
        peak_minute=hour + timedelta(minutes=7),
        first_idx=1,
        last_idx=minutes,
    )


def spain_day(rollups: list[HourlyRollup], day: date = date(2026, 3, 4)) -> dict[str, Any]:
    return build_report(
        rollups=rollups,
        roles=HOA_ROLES,
        period=period_of(PeriodKind.DAY, day, MADRID),
        tariff=SPAIN,
        contracted_kw=CONTRACTED,
        as_of=LATER,
    )


WEDNESDAY = [
    rollup("meter", "import", "2026-03-04T07:00", "1"),  # P3: 0.119
    rollup("meter", "import", "2026-03-04T08:00", "2"),  # P2: 0.314
    rollup("meter", "import", "2026-03-04T10:00", "0.5"),  # P1: 0.113
    rollup("meter", "export", "2026-03-04T12:00", "1"),  # -0.05
    rollup("pv", "solar", "2026-03-04T12:00", "3"),
    rollup("meter", "temp", "2026-03-04T12:00", "0"),  # not an energy role: ignored
]


def test_a_hand_computed_weekday_in_spain() -> None:
    report = spain_day(WEDNESDAY)
    total = report["total"]
    assert total["grid_import_kWh"] == "3.500000"
    assert total["grid_export_kWh"] == "1.000000"
    assert total["generated_kWh"] == "3.000000"
    assert total["net_kWh"] == "2.500000"
    # (3 - 1) / 3; consumption not measured: 3.5 + 3 - 1 = 5.5, 1 - 3.5 / 5.5 = 0.3636...
    assert total["self_consumption"] == {"ratio": "0.6667", "reason": None}
    assert total["self_sufficiency"] == {"ratio": "0.3636", "reason": None}
    # Three energy sensors over 1440 minutes; five hours of them present.
    assert (total["expected_minutes"], total["missing_minutes"]) == (4320, 4320 - 300)
    assert total["peak_demand"] == {
        "kW": "2.000000",
        "at": "2026-03-04T08:07:00+01:00",
        "device_id": "meter",
        "sensor": "import",
    }
    # Power term 3.45 kW x (0.079488 + 0.007638) = 0.3005847; meter rental 0.02663 a day.
    assert total["cost"] == {
        "energy": {"P1": "0.11", "P2": "0.31", "P3": "0.12"},
        "export_compensation": "-0.05",
        "power_term": "0.30",
        "fixed": "0.03",
        "total": "0.82",
    }
    hours = report["buckets"]
    assert len(hours) == 24
    assert hours[8]["start"] == "2026-03-04T08:00:00+01:00"
    assert hours[8]["cost"]["energy"] == {"P1": "0.00", "P2": "0.31", "P3": "0.00"}
    assert hours[10]["cost"]["energy"] == {"P1": "0.11", "P2": "0.00", "P3": "0.00"}
    assert report["billed_role"] == "grid_import"
    assert report["tariff"]["contracted_kW"] == {"P1": "3.45", "P2": "3.45"}
    assert json.loads(json.dumps(report)) == report  # plain JSON values only, no Decimal


def test_unknown_roles_and_missing_contracted_power_are_clear_errors() -> None:
    period = period_of(PeriodKind.DAY, date(2026, 3, 4), MADRID)
    with pytest.raises(ReportError, match="sensor import has unknown role 'grid-import'"):
        build_report(
            rollups=[],
            roles={"meter": {"import": "grid-import"}},
            period=period,
            tariff=SPAIN,
            contracted_kw=CONTRACTED,
            as_of=LATER,
        )
    with pytest.raises(ReportError, match="two rollups for device meter sensor import at"):
        spain_day([*WEDNESDAY, WEDNESDAY[0]])
    with pytest.raises(ReportError, match="power term for P1 but the community has no"):
        build_report(rollups=[], roles=HOA_ROLES, period=period, tariff=SPAIN, as_of=LATER)


def test_each_hour_is_priced_at_its_own_period_not_at_noon() -> None:
    report = spain_day(
        [
            rollup("meter", "import", "2026-03-04T13:00", "1"),  # P1: 0.226
            rollup("meter", "import", "2026-03-04T14:00", "1"),  # P2: 0.157
            rollup("meter", "import", "2026-03-04T22:00", "1"),  # P2: 0.157
            rollup("meter", "import", "2026-03-04T23:00", "1"),  # P2: 0.157
        ]
    )
    assert report["total"]["cost"]["energy"] == {"P1": "0.23", "P2": "0.47"}


def test_saturday_and_epiphany_are_p3_all_day() -> None:
    for day in (date(2026, 3, 7), date(2026, 1, 6)):
        local = f"{day.isoformat()}T11:00"
        report = spain_day([rollup("meter", "import", local, "10")], day)
        assert report["total"]["cost"]["energy"] == {"P3": "1.19"}


def test_a_year_without_holiday_data_fails_the_report() -> None:
    with pytest.raises(MissingHolidayData, match="2028"):
        spain_day([], date(2028, 1, 3))


def test_an_empty_period_has_zero_energy_null_ratios_and_still_pays_its_charges() -> None:
    report = spain_day([])
    total = report["total"]
    assert total["grid_import_kWh"] == "0.000000"
    assert total["self_consumption"] == {"ratio": None, "reason": "nothing was generated"}
    assert total["self_sufficiency"] == {"ratio": None, "reason": "no consumption"}
    assert total["missing_minutes"] == total["expected_minutes"] == 4320
    assert total["peak_demand"] is None
    assert total["cost"]["total"] == "0.33"  # power term 0.30 + meter rental 0.03
    changes = report["comparison"]["previous"]["change"]
    no_readings = {"pct": None, "reason": "no readings in the earlier period"}
    assert changes["grid_import_kWh"] == no_readings


def test_comparison_with_a_zero_and_with_a_real_previous_day() -> None:
    zero_before = [rollup("meter", "import", "2026-03-03T09:00", "0"), *WEDNESDAY]
    changes = spain_day(zero_before)["comparison"]["previous"]["change"]
    assert changes["grid_import_kWh"] == {"pct": None, "reason": "the earlier value is zero"}
    before = [rollup("meter", "import", "2026-03-03T09:00", "2"), *WEDNESDAY]
    report = spain_day(before)
    previous = report["comparison"]["previous"]
    assert previous["period"]["label"] == "2026-03-03"
    assert previous["total"]["grid_import_kWh"] == "2.000000"
    assert previous["change"]["grid_import_kWh"] == {"pct": "75.00", "reason": None}
    # 2 kWh at P2 (0.31) + power term 0.30 + rental 0.03 = 0.64; today 0.82: +28.13 %
    assert previous["total"]["cost_total"] == "0.64"
    assert previous["change"]["cost_total"] == {"pct": "28.13", "reason": None}
    year_before = report["comparison"]["year_before"]
    assert year_before["period"]["label"] == "2025-03-04"


def test_an_earlier_period_the_tariff_cannot_price_compares_energy_but_not_cost() -> None:
    report = spain_day(
        [
            rollup("meter", "import", "2024-01-02T09:00", "1"),
            rollup("meter", "import", "2025-01-02T09:00", "2"),
        ],
        date(2025, 1, 2),
    )
    year_before = report["comparison"]["year_before"]
    assert year_before["change"]["grid_import_kWh"] == {"pct": "100.00", "reason": None}
    assert year_before["change"]["cost_total"]["pct"] is None
    assert "no version valid on 2024-01-02" in year_before["change"]["cost_total"]["reason"]


def test_dst_days_report_23_and_25_rows_and_spread_daily_charges_exactly() -> None:
    for day, rows in ((date(2026, 3, 29), 23), (date(2026, 10, 25), 25)):
        report = spain_day([], day)
        assert len(report["buckets"]) == rows
        assert report["total"]["expected_minutes"] == 3 * rows * 60
        charges = report["community_charges"]
        assert charges["total"] == {"power_term": "0.30", "fixed": "0.03"}
        spread = sum(Decimal(b["power_term"]) for b in charges["buckets"])
        assert spread == Decimal("0.30")
    autumn = spain_day([rollup("meter", "import", "2026-10-25T02:00", "1")], date(2026, 10, 25))
    repeated = [b for b in autumn["buckets"] if "T02:00" in b["start"]]
    assert [b["start"][-6:] for b in repeated] == ["+02:00", "+01:00"]
    assert repeated[0]["grid_import_kWh"] == "1.000000"  # 02:00 local, first time (+02:00)


PLUG = {"plug": {"energy": "consumption"}}


def evn_report(kind: PeriodKind, day: date, rollups: list[HourlyRollup]) -> dict[str, Any]:
    return build_report(
        rollups=rollups,
        roles=PLUG,
        period=period_of(kind, day, SKOPJE),
        tariff=EVN,
        as_of=LATER,
    )


EVN_MARCH = [
    rollup("plug", "energy", "2026-03-04T10:00", "200", zone=SKOPJE),  # block 1: 887.52
    rollup("plug", "energy", "2026-03-08T10:00", "50", zone=SKOPJE),  # Sunday, low: 98.825
    # 10 kWh fill block 1 (44.376) and 90 go to block 2 (500.976): 545.352
    rollup("plug", "energy", "2026-03-11T10:00", "100", zone=SKOPJE),
    # 330 at 5.5664 (1836.912), 420 at 7.4314 (3121.188), 250 at 18.3035 (4575.875)
    rollup("plug", "energy", "2026-03-18T10:00", "1000", zone=SKOPJE),
    rollup("plug", "energy", "2026-04-01T10:00", "10", zone=SKOPJE),  # a new month: 44.376
]


def test_evn_blocks_fill_over_the_month_and_start_again_the_next() -> None:
    march = evn_report(PeriodKind.MONTH, date(2026, 3, 1), EVN_MARCH)
    assert march["billed_role"] == "consumption"
    cost = march["total"]["cost"]
    assert cost["energy"] == {"high": "10966.85", "low": "98.83"}  # 10966.847, 98.825
    assert cost["total"] == "11065.68"
    days = {row["start"][:10]: row["cost"]["energy"] for row in march["buckets"]}
    # Floors 887.52 + 545.35 + 9533.97 = 10966.84; the cent left goes to the largest remainder.
    assert [days[d]["high"] for d in ("2026-03-04", "2026-03-11", "2026-03-18")] == [
        "887.52",
        "545.35",
        "9533.98",
    ]
    april = evn_report(PeriodKind.MONTH, date(2026, 4, 1), EVN_MARCH)
    assert april["total"]["cost"]["energy"] == {"high": "44.38"}


def test_a_day_report_counts_the_blocks_from_the_start_of_the_month() -> None:
    day = evn_report(PeriodKind.DAY, date(2026, 3, 18), EVN_MARCH)
    assert day["total"]["cost"]["energy"] == {"high": "9533.98"}  # 9533.975 alone
    ranges = rollup_ranges(period_of(PeriodKind.DAY, date(2026, 3, 18), SKOPJE), EVN)
    assert ranges == [
        # 1 to 19 March 2025 for the same day a year before, with its month so far
        (datetime(2025, 2, 28, 23, tzinfo=UTC), datetime(2025, 3, 18, 23, tzinfo=UTC)),
        # 1 to 19 March 2026: the day, the day before, and the month so far
        (datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 18, 23, tzinfo=UTC)),
    ]
    spain = rollup_ranges(period_of(PeriodKind.DAY, date(2026, 3, 4), MADRID), SPAIN)
    assert spain == [
        (datetime(2025, 3, 3, 23, tzinfo=UTC), datetime(2025, 3, 4, 23, tzinfo=UTC)),
        (datetime(2026, 3, 2, 23, tzinfo=UTC), datetime(2026, 3, 4, 23, tzinfo=UTC)),
    ]


def test_csv_without_a_tariff_has_no_cost_columns() -> None:
    report = build_report(
        rollups=WEDNESDAY,
        roles=HOA_ROLES,
        period=period_of(PeriodKind.DAY, date(2026, 3, 4), MADRID),
        tariff=None,
        as_of=LATER,
    )
    assert report["total"]["cost"] is None and report["community_charges"] is None
    header = render_csv(report).splitlines()[0].split(",")
    assert header[-2:] == ["expected_minutes", "missing_minutes"]


def test_csv_has_unit_headers_local_offsets_and_a_total_row() -> None:
    text = render_csv(spain_day(WEDNESDAY))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 25
    assert rows[0]["start"] == "2026-03-04T00:00:00+01:00"
    assert rows[8]["grid_import_kWh"] == "2.000000"
    assert rows[-1]["row"] == "total"
    assert rows[-1]["cost_total_EUR"] == "0.82"
    assert rows[-1]["cost_energy_EUR"] == "0.54"
    assert rows[-1]["self_sufficiency_ratio"] == "0.3636"
    assert rows[0]["self_consumption_ratio"] == ""  # null: nothing generated that hour


def assert_parts_add_up(report: dict[str, Any]) -> None:
    """Buckets and devices add up exactly to every total."""
    energy = ("generated_kWh", "consumed_kWh", "grid_import_kWh", "grid_export_kWh", "net_kWh")
    total, buckets, devices = report["total"], report["buckets"], report["devices"]
    for key in (*energy, "expected_minutes", "missing_minutes"):
        value = Decimal(total[key])
        assert sum(Decimal(b[key]) for b in buckets) == value, key
        assert sum(Decimal(d["total"][key]) for d in devices) == value, key
        for device in devices:
            assert sum(Decimal(b[key]) for b in device["buckets"]) == Decimal(device["total"][key])
    if total["cost"] is None:
        return
    charges = report["community_charges"]
    cost_total = Decimal(total["cost"]["total"])
    assert sum(Decimal(b["cost"]["total"]) for b in buckets) == cost_total
    community = sum(Decimal(v) for v in charges["total"].values())
    assert sum(Decimal(d["total"]["cost"]["total"]) for d in devices) + community == cost_total
    for index, bucket in enumerate(buckets):
        parts = sum(Decimal(d["buckets"][index]["cost"]["total"]) for d in devices)
        parts += sum(
            Decimal(v) for k, v in charges["buckets"][index].items() if k in ("power_term", "fixed")
        )
        assert parts == Decimal(bucket["cost"]["total"])
    for device in devices:
        assert sum(Decimal(b["cost"]["total"]) for b in device["buckets"]) == Decimal(
            device["total"]["cost"]["total"]
        )


SENSORS = [("meter", "import"), ("meter", "export"), ("pv", "solar"), ("flat", "use")]
ROLES = {
    "meter": {"import": "grid_import", "export": "grid_export"},
    "pv": {"solar": "generation"},
    "flat": {"use": "consumption"},
}


@st.composite
def month_of_rollups(draw: st.DrawFn) -> list[HourlyRollup]:
    start = datetime(2026, 2, 28, 23, tzinfo=UTC)  # 1 March 2026, Madrid and Skopje midnight
    seen: set[tuple[str, str, int]] = set()
    rows = []
    for _ in range(draw(st.integers(0, 60))):
        device, sensor = draw(st.sampled_from(SENSORS))
        hour = draw(st.integers(0, 31 * 24 - 2))
        if (device, sensor, hour) in seen:
            continue
        seen.add((device, sensor, hour))
        minutes = draw(st.integers(1, 60))
        mwh = draw(st.integers(0, 400_000_000))
        rows.append(
            HourlyRollup(
                device_id=device,
                sensor=sensor,
                hour=start + timedelta(hours=hour),
                minutes=minutes,
                energy_mwh=mwh,
                peak_mw=mwh,
                peak_minute=start + timedelta(hours=hour, minutes=minutes - 1),
                first_idx=hour,
                last_idx=hour + minutes,
            )
        )
    return rows


@settings(max_examples=60, deadline=None)
@given(
    rollups=month_of_rollups(),
    kind=st.sampled_from([PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH]),
    day=st.integers(1, 31),
    tariff_id=st.sampled_from(["mk-evn-home", "es-2.0td", None]),
    as_of_hours=st.integers(0, 31 * 24),
)
def test_parts_add_up_to_totals_exactly(
    rollups: list[HourlyRollup], kind: PeriodKind, day: int, tariff_id: str | None, as_of_hours: int
) -> None:
    zone = SKOPJE if tariff_id == "mk-evn-home" else MADRID
    tariff = shipped_tariff(tariff_id) if tariff_id else None
    report = build_report(
        rollups=rollups,
        roles=ROLES,
        period=period_of(kind, date(2026, 3, day), zone),
        tariff=tariff,
        contracted_kw=CONTRACTED,
        as_of=datetime(2026, 2, 28, 23, tzinfo=UTC) + timedelta(hours=as_of_hours),
    )
    assert_parts_add_up(report)
    for row in [*report["buckets"], report["total"]]:
        assert row["missing_minutes"] >= 0
        for ratio in (row["self_consumption"]["ratio"], row["self_sufficiency"]["ratio"]):
            assert ratio is None or Decimal(0) <= Decimal(ratio) <= Decimal(1)
    assert render_csv(report).count("\r\n") == len(report["buckets"]) + 2


@settings(max_examples=40, deadline=None)
@given(
    rollups=month_of_rollups(),
    kind=st.sampled_from([PeriodKind.DAY, PeriodKind.WEEK]),
    day=st.integers(1, 31),
    tariff_id=st.sampled_from(["mk-evn-home", "es-2.0td", None]),
    as_of_hours=st.integers(0, 31 * 24),
)
def test_a_comparison_totals_the_earlier_period_as_its_own_report_does(
    rollups: list[HourlyRollup], kind: PeriodKind, day: int, tariff_id: str | None, as_of_hours: int
) -> None:
    """A comparison is computed as one bucket; its total must be the detailed one."""
    zone = SKOPJE if tariff_id == "mk-evn-home" else MADRID
    period = period_of(kind, date(2026, 3, day), zone)

    def report(target: Any) -> dict[str, Any]:
        return build_report(
            rollups=rollups,
            roles=ROLES,
            period=target,
            tariff=shipped_tariff(tariff_id) if tariff_id else None,
            contracted_kw=CONTRACTED,
            as_of=datetime(2026, 2, 28, 23, tzinfo=UTC) + timedelta(hours=as_of_hours),
        )

    own = report(period.previous())["total"]
    assert report(period)["comparison"]["previous"]["total"] == {
        **{key: own[key] for key in COMPARED},
        "cost_total": own["cost"]["total"] if own["cost"] else None,
    }


@given(
    numerators=st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=30),
    denominator=st.integers(1, 10**9),
    digits=st.integers(0, 4),
)
def test_allocate_spreads_the_rounded_total_within_a_unit_of_each_amount(
    numerators: list[int], denominator: int, digits: int
) -> None:
    units = allocate(numerators, denominator, digits)
    scale = 10**digits
    assert sum(units) == round_half_away(sum(numerators) * scale, denominator)
    for numerator, unit in zip(numerators, units, strict=True):
        assert abs(unit * denominator - numerator * scale) < denominator


@given(units=st.integers(-(10**15), 10**15), digits=st.integers(0, 4))
def test_amounts_in_minor_units_print_as_their_decimal(units: int, digits: int) -> None:
    assert _Money(digits)[units] == f"{Decimal(units).scaleb(-digits):f}"


def test_a_period_in_progress_expects_and_charges_only_the_elapsed_time() -> None:
    as_of = datetime(2026, 3, 4, 11, 30, tzinfo=UTC)  # 12:30 in Madrid
    report = build_report(
        rollups=WEDNESDAY,
        roles=HOA_ROLES,
        period=period_of(PeriodKind.DAY, date(2026, 3, 4), MADRID),
        tariff=SPAIN,
        contracted_kw=CONTRACTED,
        as_of=as_of,
    )
    total = report["total"]
    assert total["expected_minutes"] == 3 * (12 * 60 + 30)
    # 13 of 24 hours have started: 0.3005847 x 13 / 24 = 0.1628; 0.02663 x 13 / 24 = 0.0144
    assert report["community_charges"]["total"] == {"power_term": "0.16", "fixed": "0.01"}
    assert report["buckets"][13]["expected_minutes"] == 0


def test_the_device_breakdown_of_the_hand_computed_day() -> None:
    devices = {d["device_id"]: d["total"] for d in spain_day(WEDNESDAY)["devices"]}
    assert list(devices) == ["meter", "pv"]
    assert devices["meter"]["cost"] == {
        "energy": {"P1": "0.11", "P2": "0.31", "P3": "0.12"},
        "export_compensation": "-0.05",
        "total": "0.49",
    }
    assert devices["pv"]["generated_kWh"] == "3.000000"
    assert devices["pv"]["cost"]["total"] == "0.00"
    assert devices["pv"]["expected_minutes"] == 1440


def test_a_long_custom_range_reports_clipped_months() -> None:
    report = build_report(
        rollups=WEDNESDAY,
        roles=HOA_ROLES,
        period=custom_period(date(2026, 2, 20), date(2026, 4, 10), MADRID),
        tariff=SPAIN,
        contracted_kw=CONTRACTED,
        as_of=LATER,
    )
    assert [b["start"][:10] for b in report["buckets"]] == [
        "2026-02-20",
        "2026-03-01",
        "2026-04-01",
    ]
    assert report["buckets"][1]["grid_import_kWh"] == "3.500000"
    assert report["comparison"]["previous"]["period"]["from"] == "2026-01-01"
    assert_parts_add_up(report)
