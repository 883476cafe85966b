"""What each bucket of a report costs under a tariff, exactly, before rounding.

Energy is priced hour by hour: each hour's energy at the period that hour is in, under the
tariff version valid on its local date. A period priced by blocks fills them with the
device's energy of that period since the start of the local calendar month (so a report
needs the rollups from the first of the month; see `costing_start`). Power terms and
fixed charges accrue per hour elapsed (before `as_of`): a daily amount spread over the
local day's 23, 24 or 25 hours, a monthly amount over the month's hours, so whole days and
months get exactly the published amount.

Amounts here are exact: a device's costs are integers over one denominator (prices are
decimals, energy integer mWh), the community's charges fractions (a day has 23 to 25
hours). `allocate` rounds a part (a device's energy of one period, its export
compensation, the power term, the fixed charges) once over the whole report and spreads
the rounded total over the buckets by largest remainder, so buckets and devices add up
exactly to totals that are themselves correctly rounded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from contracts.energy.errors import ReportError
from contracts.energy.periods import HOUR, Bucket, BucketFinder, local_hours, local_midnight
from contracts.energy.tariff import MWH_PER_KWH, PricedHour, Tariff, TariffVersion

ROUNDING = ROUND_HALF_UP  # the one rounding rule: half away from zero, to the minor unit
ROUNDING_RULE = (
    "each cost part is rounded once over the report, half away from zero, to the minor unit; "
    "its buckets get that total by largest remainder; every total is the sum of its parts"
)

HourlyEnergy = Mapping[str, Mapping[datetime, int]]  # device id -> UTC hour -> mWh


EXPORT = "export_compensation"  # the part name of a device's export compensation
COMMUNITY = ""  # the owner of the community's own charges among the rounded parts


@dataclass
class Costs:
    """The exact costs of a report's buckets, before rounding."""

    denominator: int  # device parts are numerators over this
    parts: dict[tuple[str, str], list[int]]  # (device, period or EXPORT) -> one per bucket
    power_term: list[Fraction]
    fixed: list[Fraction]

    def rounded(self, digits: int) -> dict[tuple[str, str], list[int]]:
        """Every part rounded by `allocate`, in minor units; the community's under
        (COMMUNITY, name)."""
        out = {
            key: allocate(amounts, self.denominator, digits) for key, amounts in self.parts.items()
        }
        for name, amounts in (("power_term", self.power_term), ("fixed", self.fixed)):
            common = math.lcm(*(amount.denominator for amount in amounts))
            numerators = [amount.numerator * (common // amount.denominator) for amount in amounts]
            out[(COMMUNITY, name)] = allocate(numerators, common, digits)
        return out


def round_money(amount: Fraction, digits: int) -> Decimal:
    """`amount` rounded to `digits` decimals by ROUNDING (half away from zero)."""
    return Decimal(round_half_away(amount.numerator * 10**digits, amount.denominator)).scaleb(
        -digits
    )


def round_half_away(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) to the nearest integer, half away from zero."""
    whole, rest = divmod(abs(numerator), denominator)
    if 2 * rest >= denominator:
        whole += 1
    return whole if numerator >= 0 else -whole


def allocate(numerators: list[int], denominator: int, digits: int) -> list[int]:
    """`n / denominator` for each n in units of 10^-digits, rounded so they sum to their
    rounded sum.

    Each amount gets its floor in minor units; the units left over go to the amounts with
    the largest remainders, earlier buckets first on a tie (largest remainder method).
    """
    scale = 10**digits
    target = round_half_away(sum(numerators) * scale, denominator)
    floors = [n * scale // denominator for n in numerators]
    left = target - sum(floors)
    if left:  # (-remainder, index) pairs, sorted without a Python key function
        negated = [f * denominator - n * scale for n, f in zip(numerators, floors, strict=True)]
        for _, i in sorted(zip(negated, range(len(floors)), strict=True))[:left]:
            floors[i] += 1
    return floors


def costing_start(tariff: Tariff, zone: ZoneInfo, start: datetime) -> datetime:
    """The first UTC hour whose energy the cost of a period starting at `start` depends on."""
    if not tariff.has_blocks():
        return start
    local = start.astimezone(zone).date()
    return local_midnight(local.replace(day=1), zone)


class _Clock:
    """Calendar facts about local days, cached: hours in a day and in a month."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._day_hours: dict[date, int] = {}
        self._month_hours: dict[tuple[int, int], int] = {}

    def day_hours(self, day: date) -> int:
        if day not in self._day_hours:
            start = local_midnight(day, self.zone)
            end = local_midnight(day + timedelta(days=1), self.zone)
            self._day_hours[day] = (end - start) // HOUR
        return self._day_hours[day]

    def month_hours(self, day: date) -> int:
        key = (day.year, day.month)
        if key not in self._month_hours:
            first = day.replace(day=1)
            following = (first + timedelta(days=32)).replace(day=1)
            span = local_midnight(following, self.zone) - local_midnight(first, self.zone)
            self._month_hours[key] = span // HOUR
        return self._month_hours[key]


@dataclass(frozen=True)
class _Hour:
    """What the cost arithmetic needs to know about one UTC hour."""

    bucket: int  # index of its bucket, -1 for an hour before the period (block filling only)
    day: date  # its local date
    priced: PricedHour
    flat: tuple[int, str, Decimal] | None  # (bucket, period, price) unless priced by blocks


def bucket_costs(
    *,
    tariff: Tariff,
    zone: ZoneInfo,
    buckets: list[Bucket],
    billed: HourlyEnergy,
    exported: HourlyEnergy,
    contracted_kw: Mapping[str, Decimal],
    as_of: datetime,
    whole: bool = False,
) -> Costs:
    """The exact cost of each bucket (see the module docstring for the rules).

    Energy is summed as integer mWh per (bucket, period, price) and multiplied once, so the
    arithmetic per device-hour is integer additions. `whole`: one amount per part, the sum
    over all buckets (a comparison writes its total alone); a part still exists only when
    some bucket has energy in it, as without `whole`.
    """
    price_digits = _price_digits(tariff)
    width = 1 if whole else len(buckets)
    costs = Costs(
        denominator=10**price_digits * MWH_PER_KWH,
        parts={},
        power_term=[Fraction(0)] * width,
        fixed=[Fraction(0)] * width,
    )
    if not buckets:
        return costs

    def part(device: str, name: str) -> list[int]:
        return costs.parts.setdefault((device, name), [0] * width)

    prices_scaled: dict[Decimal, int] = {}

    def scaled(price: Decimal) -> int:
        found = prices_scaled.get(price)
        if found is None:  # exact: price_digits >= its decimals
            found = prices_scaled[price] = int(price.scaleb(price_digits))
        return found

    bucket_of = BucketFinder(buckets)
    known: dict[datetime, _Hour] = {}
    day_prices: dict[date, tuple[PricedHour, ...]] = {}

    def hour_info(hour: datetime) -> _Hour:
        found = known.get(hour)
        if found is None:
            local = hour.astimezone(zone)
            day = local.date()
            prices = day_prices.get(day)
            if prices is None:
                prices = day_prices[day] = tariff.hours_on(day)
            priced = prices[local.hour]
            price = priced.version.energy[priced.period]
            bucket = bucket_of(hour)
            flat = None
            if price.blocks is None:
                assert price.price_per_kWh is not None  # validated: exactly one kind
                flat = (bucket, priced.period, price.price_per_kWh)
            found = known[hour] = _Hour(bucket, day, priced, flat)
        return found

    # Every elapsed hour is priced, even without energy, so that a year the calendar cannot
    # price is an error whatever the data (never a silent guess).
    elapsed: dict[tuple[int, date, int], int] = defaultdict(int)  # (bucket, day, version)
    versions = {id(version): version for version in tariff.versions}
    # One pass over the period's hours (its buckets are contiguous), in time order.
    ends = [int(bucket.utc_end.timestamp()) for bucket in buckets]
    stop, index = as_of.timestamp(), 0
    for seconds, day, clock_hour in local_hours(buckets[0].utc_start, buckets[-1].utc_end, zone):
        if seconds >= stop:
            break
        while seconds >= ends[index]:
            index += 1
        prices = day_prices.get(day)
        if prices is None:
            prices = day_prices[day] = tariff.hours_on(day)
        # whole: exact fractions, so summing the hours first gives the same sum
        elapsed[(0 if whole else index, day, id(prices[clock_hour].version))] += 1
    clock = _Clock(zone)
    dailies: dict[int, Fraction] = {}  # version -> power term a day (a day's 24 buckets)
    for (index, day, version_id), hours in elapsed.items():
        version = versions[version_id]
        daily = dailies.get(version_id)
        if daily is None:
            daily = dailies[version_id] = _daily_power_term(tariff, version, contracted_kw)
        costs.power_term[index] += daily * hours / clock.day_hours(day)
        for charge in version.fixed_charges:
            spread = clock.day_hours(day) if charge.per == "day" else clock.month_hours(day)
            costs.fixed[index] += Fraction(charge.amount) * hours / spread

    accrual_start = costing_start(tariff, zone, buckets[0].utc_start)
    end = buckets[-1].utc_end
    with_blocks = tariff.has_blocks()
    for device, energy in billed.items():
        summed: dict[tuple[int, str, Decimal], int] = defaultdict(int)
        if not with_blocks:  # the usual case: one sum per hour's (bucket, period, price)
            for hour, mwh in energy.items():
                if accrual_start <= hour < end:
                    key = (known.get(hour) or hour_info(hour)).flat
                    assert key is not None  # no blocks
                    summed[key] += mwh
        else:
            _fill_blocks(summed, energy, hour_info, accrual_start, end)
        for (index, period, unit_price), mwh in summed.items():
            if index >= 0 and mwh:
                part(device, period)[0 if whole else index] += scaled(unit_price) * mwh

    for device, energy in exported.items():
        compensated: dict[tuple[int, Decimal], int] = defaultdict(int)
        for hour, mwh in energy.items():
            found = known.get(hour)
            if found is None:
                if bucket_of(hour) < 0:  # an hour outside the period is not priced
                    continue
                found = hour_info(hour)
            if found.bucket >= 0:
                export_price = found.priced.version.export_price_per_kWh
                if export_price is not None:
                    compensated[(found.bucket, export_price)] += mwh
        for (index, unit_price), mwh in compensated.items():
            if mwh:
                part(device, EXPORT)[0 if whole else index] -= scaled(unit_price) * mwh
    return costs


def _fill_blocks(
    summed: dict[tuple[int, str, Decimal], int],
    energy: Mapping[datetime, int],
    hour_info: Callable[[datetime], _Hour],
    start: datetime,
    end: datetime,
) -> None:
    """Add one device's energy of `[start, end)` to `summed` per (bucket, period, price),
    filling the blocks of a period in time order from the first of each local month."""
    filled: dict[str, int] = {}  # period -> mWh of the local month so far
    month: tuple[int, int] | None = None
    for hour in sorted(hour for hour in energy if start <= hour < end):
        mwh, info = energy[hour], hour_info(hour)
        period = info.priced.period
        price = info.priced.version.energy[period]
        if price.blocks is None:
            assert price.price_per_kWh is not None  # validated: exactly one kind
            summed[(info.bucket, period, price.price_per_kWh)] += mwh
            continue
        if (info.day.year, info.day.month) != month:
            month, filled = (info.day.year, info.day.month), {}
        position, left = filled.get(period, 0), mwh
        for block in price.blocks:
            limit = None if block.up_to_kWh is None else int(block.up_to_kWh * MWH_PER_KWH)
            if left <= 0:
                break
            if limit is not None and position >= limit:
                continue
            take = left if limit is None else min(left, limit - position)
            summed[(info.bucket, period, block.price_per_kWh)] += take
            position, left = position + take, left - take
        filled[period] = position


def _daily_power_term(
    tariff: Tariff, version: TariffVersion, contracted_kw: Mapping[str, Decimal]
) -> Fraction:
    """What a whole day's power term of `version` costs at the contracted power."""
    daily = Fraction(0)
    for power_period, per_kw_day in version.power_term_per_kW_day.items():
        if power_period not in contracted_kw:
            raise ReportError(
                f"tariff {tariff.id} has a power term for {power_period} but the community "
                f"has no contracted power for it"
            )
        daily += Fraction(per_kw_day) * Fraction(contracted_kw[power_period])
    return daily


def _price_digits(tariff: Tariff) -> int:
    """The most decimals any energy or export price of `tariff` has."""
    prices: list[Decimal] = []
    for version in tariff.versions:
        for energy in version.energy.values():
            if energy.price_per_kWh is not None:
                prices.append(energy.price_per_kWh)
            prices.extend(block.price_per_kWh for block in energy.blocks or [])
        if version.export_price_per_kWh is not None:
            prices.append(version.export_price_per_kWh)
    return max([0, *(-int(p.as_tuple().exponent) for p in prices)])
