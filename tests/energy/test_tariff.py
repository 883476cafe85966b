"""Tariff files: strict parsing, the shipped Spain 2.0TD and EVN calendars, holiday data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from contracts.energy.errors import MissingHolidayData, TariffError
from contracts.energy.periods import zone_named
from contracts.energy.tariff import json_schema, parse_tariff, price_hour, shipped_tariff

MADRID = zone_named("Europe/Madrid")
SKOPJE = zone_named("Europe/Skopje")
TARIFFS = Path(__file__).parents[2] / "contracts" / "energy"


def period_in_madrid(text: str) -> str:
    local = datetime.fromisoformat(text).replace(tzinfo=MADRID)
    return price_hour(shipped_tariff("es-2.0td"), local).period


@pytest.mark.parametrize(
    ("local", "period"),
    [
        ("2026-03-04T00:00", "P3"),  # a Wednesday
        ("2026-03-04T07:59", "P3"),
        ("2026-03-04T08:00", "P2"),
        ("2026-03-04T09:59", "P2"),
        ("2026-03-04T10:00", "P1"),
        ("2026-03-04T13:59", "P1"),
        ("2026-03-04T14:00", "P2"),
        ("2026-03-04T17:59", "P2"),
        ("2026-03-04T18:00", "P1"),
        ("2026-03-04T21:59", "P1"),
        ("2026-03-04T22:00", "P2"),
        ("2026-03-04T23:59", "P2"),
        ("2026-03-07T12:00", "P3"),  # Saturday
        ("2026-03-08T19:00", "P3"),  # Sunday
        ("2026-01-06T12:00", "P3"),  # Epiphany, a Tuesday and a national holiday
        ("2027-12-08T11:00", "P3"),  # Immaculate Conception, a Wednesday
        ("2026-01-07T12:00", "P1"),  # the day after is a working day again
    ],
)
def test_spain_2_0td_periods(local: str, period: str) -> None:
    assert period_in_madrid(local) == period


def test_spain_versions_price_each_hour_by_the_version_valid_then() -> None:
    tariff = shipped_tariff("es-2.0td")
    may = price_hour(tariff, datetime(2025, 5, 31, 23, tzinfo=MADRID))
    june = price_hour(tariff, datetime(2025, 6, 2, 11, tzinfo=MADRID))
    assert str(may.version.energy["P2"].price_per_kWh) == "0.166"
    assert str(june.version.energy["P1"].price_per_kWh) == "0.226"


def test_a_year_without_holiday_data_is_an_error() -> None:
    with pytest.raises(MissingHolidayData, match=r"no public holiday data for 2028"):
        period_in_madrid("2028-03-01T12:00")


def test_an_hour_before_the_first_version_is_an_error() -> None:
    with pytest.raises(TariffError, match="no version valid on 2024-12-31"):
        period_in_madrid("2024-12-31T12:00")


@pytest.mark.parametrize(
    ("local", "period"),
    [
        ("2026-03-08T12:00", "low"),  # Sunday, all day
        ("2026-03-07T21:59", "high"),  # Saturday before 22:00
        ("2026-03-07T22:00", "low"),  # Saturday from 22:00
        ("2026-03-09T06:59", "low"),  # Monday before 07:00
        ("2026-03-09T07:00", "high"),
        ("2026-03-10T12:59", "high"),  # a Tuesday
        ("2026-03-10T13:00", "low"),
        ("2026-03-10T14:59", "low"),
        ("2026-03-10T15:00", "high"),
        ("2026-03-10T22:00", "low"),
        ("2026-03-11T03:00", "low"),
    ],
)
def test_evn_low_and_high_hours(local: str, period: str) -> None:
    when = datetime.fromisoformat(local).replace(tzinfo=SKOPJE)
    assert price_hour(shipped_tariff("mk-evn-home"), when).period == period


def tariff_document() -> dict[str, object]:
    return json.loads((TARIFFS / "tariffs" / "mk-evn-home.json").read_text())


def test_amounts_must_be_decimal_strings() -> None:
    document = tariff_document()
    document["versions"][0]["energy"]["low"]["price_per_kWh"] = 1.9765  # type: ignore[index]
    with pytest.raises(TariffError, match=r"versions\.0\.energy\.low\.price_per_kWh.*decimal"):
        parse_tariff(json.dumps(document))


def test_a_schedule_with_a_gap_is_refused() -> None:
    document = tariff_document()
    document["versions"][0]["calendar"]["schedules"]["sunday"] = [  # type: ignore[index]
        {"start": 0, "end": 20, "period": "low"}
    ]
    with pytest.raises(TariffError, match="'sunday' stops at hour 20"):
        parse_tariff(json.dumps(document))


def test_overlapping_versions_are_refused() -> None:
    document = tariff_document()
    version = document["versions"][0]  # type: ignore[index]
    document["versions"] = [version, {**version, "valid_from": "2025-06-01"}]
    with pytest.raises(TariffError, match="without overlap"):
        parse_tariff(json.dumps(document))


def test_unknown_fields_are_refused() -> None:
    document = tariff_document()
    document["discount"] = "0.1"
    with pytest.raises(TariffError, match="discount"):
        parse_tariff(json.dumps(document))


def test_the_exported_json_schema_is_up_to_date() -> None:
    shipped = json.loads((TARIFFS / "tariff.schema.json").read_text())
    assert shipped == json_schema()


def test_an_empty_holiday_list_is_data_for_that_year() -> None:
    document = json.loads((TARIFFS / "tariffs" / "es-2.0td.json").read_text())
    document["versions"][1]["calendar"]["holidays"]["2028"] = []
    tariff = parse_tariff(json.dumps(document))
    when = datetime(2028, 1, 6, 12, tzinfo=MADRID)  # Epiphany, but not listed for 2028
    assert price_hour(tariff, when).period == "P1"
