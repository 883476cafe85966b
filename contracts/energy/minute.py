"""What one `energy_minute` payload says about energy: per sensor, mWh and one-minute mW.

The rounding rule, the same everywhere (gateway rollups, `patio report verify`): a JSON
number is taken as the exact decimal of its shortest representation (Python's `repr` of
the parsed float, which is also its RFC 8785 form), the arithmetic is exact, and the result
is rounded once to an integer, half to even (ROUND_HALF_EVEN). Each minute is rounded on
its own; an hour is the integer sum of its minutes, so a late minute simply adds to it.

- Counter (`{"unit": "Wh", "sum"}`): energy = sum x 1000 mWh; power = sum x 60 x 1000 mW
  (the minute's average power).
- Power gauge in W or kW (`avg`): power = avg x 1000 mW (x 10^6 for kW); energy = that
  average power over the minute, avg x 1000 / 60 mWh (x 10^6 / 60 for kW).
- Anything else (temperature, a switch, VA, other units) carries no energy: energy and
  power are None, but a measured minute still counts as present.

A reading is present when it was measured: a gauge with an `avg`, a counter or switch whose
`n`, if given, is above 0. A counter with `n: 0` has `sum: 0` only because the contract
requires a number (edge/aggregate.py), so it is a missing minute, not a zero. Values beyond
+-10^12 W or Wh in one minute are not plausible energy: present, but no energy or power
(they would overflow the 64-bit sums of a year).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts.energy.hourly import HourlyRollup

CONTRACT = "energy_minute@1"  # the only contract whose entries are rolled up
MW_PER_UNIT = {"W": 1000, "kW": 1_000_000}  # power gauges
ENERGY_UNITS = {"Wh", *MW_PER_UNIT}
LIMIT = 10**12  # W or Wh in one minute
HOUR = 3600
# The contract's form exactly (DESIGN.md pinned format 3), on the minute.
START = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00Z")


@dataclass(frozen=True, slots=True)
class SensorMinute:
    """One sensor's reading in one minute."""

    sensor: str
    present: bool
    energy_mwh: int | None
    power_mw: int | None


def exact(value: Any) -> tuple[int, int] | None:
    """A JSON number as the exact fraction (numerator, power of ten) of its shortest repr;
    None for anything but a finite number."""
    if not _number(value):
        return None
    if isinstance(value, int):
        return value, 1
    # Integer arithmetic on the decimal digits: the same value as Decimal(repr(value)),
    # at a third of the cost (tests hold the two to the same results).
    digits, _, exponent = repr(value).partition("e")
    whole, _, fraction = digits.partition(".")
    scale = len(fraction) - int(exponent or 0)
    numerator = int(whole + fraction)
    return (numerator * 10**-scale, 1) if scale < 0 else (numerator, 10**scale)


def half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to an integer, half to even (denominator > 0)."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        return quotient + 1
    return quotient


def _measured(reading: Mapping[str, Any]) -> bool:
    n = reading.get("n")
    return n is None or (isinstance(n, int) and not isinstance(n, bool) and n > 0)


NOT_ENERGY = (True, None, None), (False, None, None)  # (present, energy, power), shared


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reading(reading: Any) -> tuple[bool, int | None, int | None] | None:
    """(present, energy mWh, power mW) of one reading; None when it is not a reading."""
    if not isinstance(reading, dict):
        return None
    unit = reading.get("unit")
    if unit.__class__ is str and unit not in ENERGY_UNITS:  # most readings: no energy
        if unit == "bool":
            return NOT_ENERGY[0] if _measured(reading) else NOT_ENERGY[1]
        # Any other gauge is measured when it has an average (a parsed float's class is
        # float: tested first, as most gauges are temperatures).
        avg = reading.get("avg")
        measured = math.isfinite(avg) if avg.__class__ is float else _number(avg)
        return NOT_ENERGY[0] if measured else NOT_ENERGY[1]
    if unit == "Wh":
        if not _measured(reading):
            return False, None, None
        wh = exact(reading.get("sum"))
        if wh is None or abs(wh[0]) > LIMIT * wh[1]:
            return True, None, None
        return True, half_even(wh[0] * 1000, wh[1]), half_even(wh[0] * 60_000, wh[1])
    scale = MW_PER_UNIT.get(unit) if unit.__class__ is str else None
    if scale is not None:
        avg = exact(reading.get("avg"))
        if avg is None:
            return False, None, None
        if abs(avg[0]) > LIMIT * avg[1]:
            return True, None, None
        mw = avg[0] * scale
        return True, half_even(mw, avg[1] * 60), half_even(mw, avg[1])
    return None


def sensor_minute(sensor: str, reading: Any) -> SensorMinute | None:
    """The energy and power of one reading; None when it is not a reading at all."""
    found = _reading(reading)
    return None if found is None else SensorMinute(sensor, *found)


@functools.lru_cache(maxsize=4096)
def _start_seconds(text: str) -> int | None:
    if not START.fullmatch(text):
        return None
    try:
        return int(datetime.fromisoformat(text[:19]).replace(tzinfo=UTC).timestamp())
    except ValueError:  # a month 13, a 25th hour
        return None


def minute_start(payload: Any) -> datetime | None:
    """The payload's `start`, aware UTC on the minute; None when it is not one."""
    text = payload.get("start") if isinstance(payload, dict) else None
    seconds = _start_seconds(text) if isinstance(text, str) else None
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def energy_minute(payload: Any) -> tuple[datetime, list[SensorMinute]] | None:
    """The minute and its sensors' readings; None when the payload has no usable minute."""
    start = minute_start(payload)
    readings = payload.get("readings") if isinstance(payload, dict) else None
    if start is None or not isinstance(readings, dict):
        return None
    found = [
        sensor_minute(sensor, reading)
        for sensor, reading in readings.items()
        if isinstance(sensor, str)
    ]
    return start, [minute for minute in found if minute is not None]


@dataclass(slots=True)
class HourTotals:
    """A (device, sensor, hour) being summed: the mutable twin of HourlyRollup.

    Times are Unix seconds. The peak is the highest one-minute power; of equal ones, the
    earliest minute, so the result does not depend on the order minutes arrive in. `chain`
    is the chain over the entries folded before this sum began (b"" for none, None when
    unknown) and `tags` the log tag ids folded since, in log order (see `extend_chain`).
    """

    minutes: int
    energy_mwh: int | None
    peak_mw: int | None
    peak_minute: int | None
    first_idx: int
    last_idx: int
    entries: int = 0
    chain: bytes | None = b""
    tags: list[bytes] = field(default_factory=list)

    def add(
        self, index: int, minute: int, present: bool, energy: int | None, power: int | None
    ) -> None:
        """Fold in one minute's reading."""
        self.minutes += present
        if energy is not None:
            self.energy_mwh = energy if self.energy_mwh is None else self.energy_mwh + energy
        if power is not None and (
            self.peak_mw is None
            or self.peak_minute is None
            or (power, -minute) > (self.peak_mw, -self.peak_minute)
        ):
            self.peak_mw, self.peak_minute = power, minute
        if index < self.first_idx:
            self.first_idx = index
        if index > self.last_idx:
            self.last_idx = index


HourKey = tuple[str, str, int]  # device_id, sensor, hour (Unix seconds)


def extend_chain(chain: bytes | None, tags: Iterable[bytes]) -> bytes | None:
    """A rollup's chain over its entries' log tag ids in log order: from b"" (no entry),
    each entry's makes it SHA-256(chain || tag id as ASCII). None (unknown) stays None."""
    if chain is None:
        return None
    for tag in tags:
        chain = hashlib.sha256(chain + tag).digest()
    return chain


# What one entry adds to its hours: per rolled-up sensor, in the payload's order,
# (minute, sensor, present, energy mWh, power mW). A pure function of the payload, so the
# gateway's HTTP process computes it beside the signature check and the writer only sums.
Minutes = tuple[tuple[int, str, bool, int | None, int | None], ...]


def entry_minutes(payload: Any) -> Minutes:
    """What `add_entry` folds of one energy_minute payload; () when nothing."""
    text = payload.get("start") if isinstance(payload, dict) else None
    minute = _start_seconds(text) if isinstance(text, str) else None
    readings = payload.get("readings") if minute is not None else None
    if minute is None or not isinstance(readings, dict):
        return ()
    found: list[tuple[int, str, bool, int | None, int | None]] = []
    for sensor, reading in readings.items():
        # Only minutes with energy or power are rolled up: a report reads nothing else
        # (temperatures, switches and unusable readings would be rows no report reads).
        # Only an energy unit gives either: the others are passed over unread.
        unit = reading.get("unit") if isinstance(reading, dict) else None
        if unit.__class__ is not str or unit not in ENERGY_UNITS:
            continue
        read = _reading(reading) if isinstance(sensor, str) else None
        if read is None or (read[1] is None and read[2] is None):
            continue
        found.append((minute, sensor, *read))
    return tuple(found)


def add_minutes(
    totals: dict[HourKey, HourTotals], index: int, device_id: str, minutes: Minutes, tag: bytes
) -> None:
    """Fold one entry's `entry_minutes`, log index `index` and log tag id `tag` (ASCII).

    Entries must come in log order (the chains follow it). The entry is counted once, in
    `entries` of the first of its rolled-up sensors in code point order, so the `entries`
    of a device's rollups add up to the distinct entries folded into them."""
    counted: tuple[str, HourTotals] | None = None
    for minute, sensor, present, energy, power in minutes:
        key = (device_id, sensor, minute - minute % HOUR)
        known = totals.get(key)
        if known is None:
            totals[key] = known = HourTotals(0, None, None, None, index, index)
        known.add(index, minute, present, energy, power)
        known.tags.append(tag)
        if counted is None or sensor < counted[0]:
            counted = (sensor, known)
    if counted is not None:
        counted[1].entries += 1


def add_entry(
    totals: dict[HourKey, HourTotals], index: int, device_id: str, payload: Any, tag: bytes
) -> None:
    """Fold one logged energy_minute payload, log tag id `tag` (ASCII), into `totals`
    (entries in log order; see `add_minutes`)."""
    add_minutes(totals, index, device_id, entry_minutes(payload), tag)


def _utc(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def hourly_rollup(key: HourKey, totals: HourTotals) -> HourlyRollup:
    """The public shape of a summed hour."""
    device_id, sensor, hour = key
    return HourlyRollup(
        device_id=device_id,
        sensor=sensor,
        hour=datetime.fromtimestamp(hour, UTC),
        minutes=totals.minutes,
        energy_mwh=totals.energy_mwh,
        peak_mw=totals.peak_mw,
        peak_minute=_utc(totals.peak_minute),
        first_idx=totals.first_idx,
        last_idx=totals.last_idx,
        entries=totals.entries,
        chain=extend_chain(totals.chain, totals.tags),
    )


def rollups(entries: Iterable[tuple[int, str, Any, bytes]]) -> list[HourlyRollup]:
    """Hourly rollups from scratch: (log index, device id, payload, log tag id) of accepted
    energy_minute entries, in any order; sorted by device, sensor and hour."""
    totals: dict[HourKey, HourTotals] = {}
    for index, device_id, payload, tag in sorted(entries, key=lambda entry: entry[0]):
        add_entry(totals, index, device_id, payload, tag)
    return [hourly_rollup(key, totals[key]) for key in sorted(totals)]
