"""Report periods in a community's local time and the buckets (rows) they split into.

A period is a range of local calendar dates `first..last` (both inclusive) in an IANA zone.
`day` is one date in hourly buckets (23 or 25 on a DST change day), `week` an ISO week
(Monday to Sunday) in daily buckets, `month` one bucket per day, `year` 12 monthly buckets.
A custom range is bucketed by its length: up to 2 days hourly, up to 35 days daily, longer
monthly (the first and last month clipped to the range).

Earlier periods for comparison:
- `previous`: the period just before, of the same kind (the previous day, ISO week, month,
  year; for a custom range the same number of days ending the day before `first`).
- `year_before`: the same period one year earlier: the same date (29 February becomes
  28 February), the same ISO week number of the previous ISO year (week 53 becomes week 52
  when that year has none), the same month, the previous year; a custom range has both ends
  moved back a year (29 February becomes 28 February).
"""

from __future__ import annotations

import calendar
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contracts.energy.errors import PeriodError

HOURLY_UP_TO_DAYS = 2  # issue 11: "up to 2 days hourly, up to 35 days daily, longer monthly"
DAILY_UP_TO_DAYS = 35
MAX_RANGE_DAYS = 366 * 10  # a custom range longer than this is refused, not computed for minutes
HOUR = timedelta(hours=1)


class PeriodKind(StrEnum):
    """What the `period` query parameter names."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"
    CUSTOM = "custom"


class BucketSize(StrEnum):
    """How long one row of a report is."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class Bucket:
    """One row of a report: a local interval and the UTC interval it covers (end exclusive)."""

    local_start: datetime
    local_end: datetime
    utc_start: datetime
    utc_end: datetime

    def hours(self) -> list[datetime]:
        """The UTC hours (aware, on the hour) this bucket is made of."""
        count = (self.utc_end - self.utc_start) // HOUR
        return [self.utc_start + i * HOUR for i in range(count)]


class BucketFinder:
    """Which of a period's buckets holds an hour, by bisection (a year has 17,520 hours)."""

    def __init__(self, buckets: list[Bucket]) -> None:
        self.starts = [bucket.utc_start for bucket in buckets]
        self.end = buckets[-1].utc_end if buckets else None

    def __call__(self, hour: datetime) -> int:
        """The index of the bucket holding `hour`, -1 when none does."""
        if self.end is None or hour >= self.end:
            return -1
        return bisect_right(self.starts, hour) - 1


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone `name`, or a PeriodError saying it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PeriodError(f"unknown IANA time zone {name!r}") from exc


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant local `day` starts, as an aware UTC datetime.

    A midnight that falls in a DST gap resolves (fold=0) to the instant the gap ends; a repeated
    midnight to its first occurrence: either way the start of the day's first local hour.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_hours(start: datetime, end: datetime, zone: ZoneInfo) -> Iterator[tuple[int, date, int]]:
    """(Unix seconds, local date, local clock hour) of each UTC hour in `[start, end)`.

    A day without a change of offset is worked out once, not hour by hour."""
    seconds, stop = int(start.timestamp()), int(end.timestamp())
    while seconds < stop:
        local = datetime.fromtimestamp(seconds, zone)
        day = local.date()
        day_end = int(local_midnight(day + timedelta(days=1), zone).timestamp())
        run_end = min(day_end, stop)
        if datetime.fromtimestamp(run_end - 1, zone).utcoffset() == local.utcoffset():
            for k, hour in enumerate(range(seconds, run_end, 3600)):
                yield hour, day, local.hour + k
        else:  # a DST change inside the day
            for hour in range(seconds, run_end, 3600):
                yield hour, day, datetime.fromtimestamp(hour, zone).hour
        seconds = run_end


@dataclass(frozen=True)
class Period:
    """Local dates `first..last` (inclusive) in `zone`, of a kind, in buckets of a size."""

    kind: PeriodKind
    first: date
    last: date
    zone: ZoneInfo

    @property
    def days(self) -> int:
        """How many local calendar days the period spans."""
        return (self.last - self.first).days + 1

    @property
    def bucket_size(self) -> BucketSize:
        """Hourly for a day, daily for a week or month, monthly for a year; custom by length."""
        if self.kind is PeriodKind.DAY:
            return BucketSize.HOUR
        if self.kind in (PeriodKind.WEEK, PeriodKind.MONTH):
            return BucketSize.DAY
        if self.kind is PeriodKind.YEAR:
            return BucketSize.MONTH
        if self.days <= HOURLY_UP_TO_DAYS:
            return BucketSize.HOUR
        if self.days <= DAILY_UP_TO_DAYS:
            return BucketSize.DAY
        return BucketSize.MONTH

    @property
    def utc_start(self) -> datetime:
        """The instant the period starts."""
        return local_midnight(self.first, self.zone)

    @property
    def utc_end(self) -> datetime:
        """The instant the period ends (exclusive)."""
        return local_midnight(self.last + timedelta(days=1), self.zone)

    def buckets(self) -> list[Bucket]:
        """The rows of the report, in order, covering the period exactly."""
        edges = self._bucket_edges()
        for edge in edges:
            if edge.minute or edge.second:
                # Rollups are whole UTC hours; a zone at UTC+5:30 would split one.
                raise PeriodError(
                    f"time zone {self.zone.key} is not a whole number of hours from UTC on "
                    f"{edge.astimezone(self.zone).date()}; hourly rollups cannot be split"
                )
        return [
            Bucket(
                local_start=start.astimezone(self.zone),
                local_end=end.astimezone(self.zone),
                utc_start=start,
                utc_end=end,
            )
            for start, end in pairwise(edges)
        ]

    def _bucket_edges(self) -> list[datetime]:
        start, end = self.utc_start, self.utc_end
        if self.bucket_size is BucketSize.HOUR:
            return [start + i * HOUR for i in range((end - start) // HOUR + 1)]
        if self.bucket_size is BucketSize.DAY:
            dates = [self.first + timedelta(days=i) for i in range(self.days + 1)]
        else:
            dates = [self.first]
            month = date(self.first.year, self.first.month, 1)
            while True:
                month = _add_months(month, 1)
                if month > self.last:
                    break
                dates.append(month)
            dates.append(self.last + timedelta(days=1))
        return [local_midnight(d, self.zone) for d in dates]

    def previous(self) -> Period:
        """The period just before this one, of the same kind and length."""
        if self.kind is PeriodKind.DAY:
            return period_of(PeriodKind.DAY, self.first - timedelta(days=1), self.zone)
        if self.kind is PeriodKind.WEEK:
            return period_of(PeriodKind.WEEK, self.first - timedelta(days=7), self.zone)
        if self.kind is PeriodKind.MONTH:
            return period_of(PeriodKind.MONTH, _add_months(self.first, -1), self.zone)
        if self.kind is PeriodKind.YEAR:
            return period_of(PeriodKind.YEAR, date(self.first.year - 1, 1, 1), self.zone)
        last = self.first - timedelta(days=1)
        return custom_period(last - timedelta(days=self.days - 1), last, self.zone)

    def year_before(self) -> Period:
        """The same period one year earlier (see the module docstring for 29 Feb and week 53)."""
        if self.kind is PeriodKind.WEEK:
            iso_year, week, _ = self.first.isocalendar()
            weeks_then = date(iso_year - 1, 12, 28).isocalendar().week  # 28 Dec is in the last
            monday = date.fromisocalendar(iso_year - 1, min(week, weeks_then), 1)
            return period_of(PeriodKind.WEEK, monday, self.zone)
        if self.kind is PeriodKind.CUSTOM:
            return custom_period(_year_earlier(self.first), _year_earlier(self.last), self.zone)
        return period_of(self.kind, _year_earlier(self.first), self.zone)

    def label(self) -> str:
        """A short name: `2026-03-29`, `2026-W53`, `2026-03`, `2026`, or `first/last`."""
        if self.kind is PeriodKind.DAY:
            return self.first.isoformat()
        if self.kind is PeriodKind.WEEK:
            iso = self.first.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"
        if self.kind is PeriodKind.MONTH:
            return f"{self.first.year:04d}-{self.first.month:02d}"
        if self.kind is PeriodKind.YEAR:
            return f"{self.first.year:04d}"
        return f"{self.first.isoformat()}/{self.last.isoformat()}"


def period_of(kind: PeriodKind, on: date, zone: ZoneInfo) -> Period:
    """The day, ISO week, month or year that contains local date `on`."""
    if kind is PeriodKind.DAY:
        return Period(kind, on, on, zone)
    if kind is PeriodKind.WEEK:
        monday = on - timedelta(days=on.weekday())
        return Period(kind, monday, monday + timedelta(days=6), zone)
    if kind is PeriodKind.MONTH:
        last_day = calendar.monthrange(on.year, on.month)[1]
        return Period(kind, on.replace(day=1), on.replace(day=last_day), zone)
    if kind is PeriodKind.YEAR:
        return Period(kind, date(on.year, 1, 1), date(on.year, 12, 31), zone)
    raise PeriodError("a custom period needs `from` and `to`, not one date")


def custom_period(first: date, last: date, zone: ZoneInfo) -> Period:
    """The local dates `first..last`, both inclusive."""
    if last < first:
        raise PeriodError(f"`to` ({last}) is before `from` ({first})")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise PeriodError(f"a custom range may span at most {MAX_RANGE_DAYS} days")
    return Period(PeriodKind.CUSTOM, first, last, zone)


def _add_months(day: date, months: int) -> date:
    """The first of the month `months` after (or before) `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _year_earlier(day: date) -> date:
    """The same date a year earlier; 29 February becomes 28 February."""
    if day.month == 2 and day.day == 29:
        return date(day.year - 1, 2, 28)
    return day.replace(year=day.year - 1)
