"""Rollups summed to the coarsest grain a report can use, so a year is a few thousand rows.

`build_report` reads hourly rollups, but it only ever needs, per device and sensor, the sums
over hours that fall in the same bucket of the period, in the same one of the comparisons
(the previous period, the year before: only their totals are written, so their buckets do
not matter), in the same local month (tariff blocks fill per month), in the same tariff
period and version. Hours sharing all of that form one *unit*; a unit is represented by its
first hour, and the rollups of its hours summed into one rollup at that hour give
`build_report` exactly the same report (a test holds the two paths equal):

- energy and minutes are sums; the peak is the highest with the earliest minute, as
  `build_report` picks among rollups of one device and sensor;
- a unit's hours are contiguous in time within each tariff period and month, so monthly
  blocks fill in the same amounts;
- the hour that contains `as_of` and any later one stay units of their own: only there are
  minutes capped by the time elapsed.

The gateway sends `units(...)` (UTC hour -> its unit's first hour, Unix seconds) to the
database and lets it GROUP BY; `merge` does the same in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime

from contracts.energy.errors import TariffError
from contracts.energy.hourly import HourlyRollup
from contracts.energy.minute import HourTotals, hourly_rollup
from contracts.energy.periods import Period, local_hours
from contracts.energy.report import rollup_ranges
from contracts.energy.tariff import PricedHour, Tariff


def units(period: Period, tariff: Tariff | None, as_of: datetime) -> dict[int, int]:
    """Every UTC hour `build_report` reads for `period` -> the first hour of its unit."""
    periods = (period, period.previous(), period.year_before())
    bucket_of = [  # keyed by Unix seconds: a year's lookups hash ints, not aware datetimes
        {
            seconds: i
            for i, bucket in enumerate(p.buckets())
            for seconds in range(
                int(bucket.utc_start.timestamp()), int(bucket.utc_end.timestamp()), 3600
            )
        }
        for p in periods
    ]
    # Hours in an hourly bucket of the period are units of their own. A comparison's hours
    # are keyed by whether they are in it, not by its bucket: its total alone is written
    # (a comparison's cost is still priced per hour by the tariff period in the key), so a
    # day's two comparisons are a few units each instead of 24 hours each.
    current, previous, year_before = bucket_of
    own = set(current) if period.bucket_size.value == "hour" else set()
    partial = int(as_of.replace(minute=0, second=0, microsecond=0).timestamp())
    first_of: dict[tuple[object, ...], int] = {}
    out: dict[int, int] = {}
    day_prices: dict[date, tuple[PricedHour, ...] | None] = {}  # None: the tariff cannot
    for start, end in rollup_ranges(period, tariff):
        for seconds, day, clock_hour in local_hours(start, end, period.zone):
            if seconds >= partial or seconds in own:
                out[seconds] = seconds  # an hour of its own
                continue
            key: tuple[object, ...] = (
                seconds in previous, current.get(seconds, -1), seconds in year_before,
                day.year, day.month,
            )  # fmt: skip
            if tariff is not None:
                if day not in day_prices:
                    try:
                        day_prices[day] = tariff.hours_on(day)
                    except TariffError:  # build_report decides what an unpriced hour means
                        day_prices[day] = None
                prices = day_prices[day]
                if prices is None:
                    key = (seconds,)
                else:
                    priced = prices[clock_hour]
                    key += (id(priced.version), priced.period)
            out[seconds] = first_of.setdefault(key, seconds)
    return out


def add(totals: HourTotals, rollup: HourlyRollup) -> None:
    """Fold one rollup (or partial sum) into a unit's totals."""
    totals.minutes += rollup.minutes
    if rollup.energy_mwh is not None:
        totals.energy_mwh = (totals.energy_mwh or 0) + rollup.energy_mwh
    if rollup.peak_mw is not None and rollup.peak_minute is not None:
        minute = int(rollup.peak_minute.timestamp())
        if (
            totals.peak_mw is None
            or totals.peak_minute is None
            or (rollup.peak_mw, -minute) > (totals.peak_mw, -totals.peak_minute)
        ):
            totals.peak_mw, totals.peak_minute = rollup.peak_mw, minute
    totals.first_idx = min(totals.first_idx, rollup.first_idx)
    totals.last_idx = max(totals.last_idx, rollup.last_idx)


def merge(rollups: Iterable[HourlyRollup], unit_of: Mapping[int, int]) -> list[HourlyRollup]:
    """Rollups summed per (device, sensor, unit); hours outside `unit_of` are dropped."""
    totals: dict[tuple[str, str, int], HourTotals] = {}
    for rollup in rollups:
        unit = unit_of.get(int(rollup.hour.timestamp()))
        if unit is None:
            continue
        key = (rollup.device_id, rollup.sensor, unit)
        known = totals.get(key)
        if known is None:
            known = totals[key] = HourTotals(0, None, None, None, rollup.first_idx, rollup.last_idx)
        add(known, rollup)
    return [hourly_rollup(key, totals[key]) for key in sorted(totals)]
