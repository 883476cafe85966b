"""Periods and buckets in local time: DST days, ISO weeks across a year, months, comparisons."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from contracts.energy.errors import PeriodError
from contracts.energy.periods import BucketSize, PeriodKind, custom_period, period_of, zone_named

MADRID = zone_named("Europe/Madrid")


def test_spring_dst_day_has_23_hourly_buckets() -> None:
    day = period_of(PeriodKind.DAY, date(2026, 3, 29), MADRID)
    buckets = day.buckets()
    assert len(buckets) == 23
    assert buckets[0].utc_start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert [b.local_start.isoformat() for b in buckets[1:3]] == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00 does not exist that day
    ]
    assert buckets[-1].local_end.isoformat() == "2026-03-30T00:00:00+02:00"


def test_autumn_dst_day_has_25_hourly_buckets_with_the_repeated_hour_twice() -> None:
    buckets = period_of(PeriodKind.DAY, date(2026, 10, 25), MADRID).buckets()
    assert len(buckets) == 25
    starts = [b.local_start.isoformat() for b in buckets]
    assert starts[2:4] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    assert buckets[2].utc_start == datetime(2026, 10, 25, 0, tzinfo=UTC)
    assert buckets[3].utc_start == datetime(2026, 10, 25, 1, tzinfo=UTC)


def test_iso_week_53_of_2026_runs_into_2027() -> None:
    week = period_of(PeriodKind.WEEK, date(2027, 1, 1), MADRID)
    assert (week.first, week.last) == (date(2026, 12, 28), date(2027, 1, 3))
    assert week.label() == "2026-W53"
    assert week.bucket_size is BucketSize.DAY
    assert [b.local_start.date() for b in week.buckets()] == [
        date(2026, 12, 28 + i) for i in range(4)
    ] + [date(2027, 1, i) for i in (1, 2, 3)]
    assert week.previous().label() == "2026-W52"
    # 2025 has no week 53: the same week a year before is 2025-W52.
    assert week.year_before().label() == "2025-W52"
    assert week.year_before().first == date(2025, 12, 22)
    following = period_of(PeriodKind.WEEK, date(2027, 1, 4), MADRID)
    assert following.label() == "2027-W01"
    assert following.previous() == week


def test_month_has_every_day_and_year_has_twelve_months() -> None:
    february = period_of(PeriodKind.MONTH, date(2028, 2, 10), MADRID)
    assert [b.local_start.day for b in february.buckets()] == list(range(1, 30))
    year = period_of(PeriodKind.YEAR, date(2026, 6, 1), MADRID)
    buckets = year.buckets()
    assert [b.local_start.month for b in buckets] == list(range(1, 13))
    assert sum(len(b.hours()) for b in buckets) == 8760
    assert len(buckets[2].hours()) == 31 * 24 - 1  # March loses the spring hour
    assert len(buckets[9].hours()) == 31 * 24 + 1  # October gains the autumn hour


def test_year_before_of_29_february_is_28_february() -> None:
    leap_day = period_of(PeriodKind.DAY, date(2028, 2, 29), MADRID)
    assert leap_day.year_before().first == date(2027, 2, 28)
    assert leap_day.previous().first == date(2028, 2, 28)
    span = custom_period(date(2028, 2, 20), date(2028, 2, 29), MADRID)
    assert (span.year_before().first, span.year_before().last) == (
        date(2027, 2, 20),
        date(2027, 2, 28),
    )
    assert period_of(PeriodKind.MONTH, date(2026, 1, 5), MADRID).previous().label() == "2025-12"


def test_custom_range_bucket_size_follows_its_length() -> None:
    two_days = custom_period(date(2026, 3, 28), date(2026, 3, 29), MADRID)
    assert two_days.bucket_size is BucketSize.HOUR
    assert len(two_days.buckets()) == 24 + 23
    three = custom_period(date(2026, 3, 1), date(2026, 3, 3), MADRID)
    assert three.bucket_size is BucketSize.DAY and len(three.buckets()) == 3
    assert custom_period(date(2026, 1, 1), date(2026, 2, 4), MADRID).bucket_size is BucketSize.DAY
    long = custom_period(date(2026, 1, 15), date(2026, 3, 10), MADRID)
    assert long.bucket_size is BucketSize.MONTH
    assert [(b.local_start.date(), b.local_end.date()) for b in long.buckets()] == [
        (date(2026, 1, 15), date(2026, 2, 1)),
        (date(2026, 2, 1), date(2026, 3, 1)),
        (date(2026, 3, 1), date(2026, 3, 11)),
    ]
    assert long.previous().last == date(2026, 1, 14)
    assert long.previous().days == long.days


def test_bad_ranges_and_zones_are_clear_errors() -> None:
    with pytest.raises(PeriodError, match="before `from`"):
        custom_period(date(2026, 3, 2), date(2026, 3, 1), MADRID)
    with pytest.raises(PeriodError, match="unknown IANA time zone 'Mars/Olympus'"):
        zone_named("Mars/Olympus")
    with pytest.raises(PeriodError, match="not a whole number of hours"):
        period_of(PeriodKind.DAY, date(2026, 3, 1), zone_named("Asia/Kolkata")).buckets()
