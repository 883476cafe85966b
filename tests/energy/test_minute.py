"""Energy of one minute and the hourly fold: hand-computed figures, and the rounding rule."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest

from contracts.energy.minute import (
    SensorMinute,
    energy_minute,
    exact,
    half_even,
    rollups,
    sensor_minute,
)

HOUR = datetime(2026, 11, 22, 10, tzinfo=UTC)


def payload(start: str, **readings: object) -> dict[str, object]:
    return {"device_id": "d1", "seq": 1, "start": start, "period_s": 60, "readings": readings}


def tag(index: int) -> bytes:
    """A stand-in log tag id for entry `index` (ASCII, as the real ones are)."""
    return f"c274b5{index:064x}".encode()


def gauge(unit: str, avg: float | None) -> dict[str, object]:
    n = 0 if avg is None else 12
    return {"unit": unit, "n": n, "missing": 12 - n, "avg": avg, "min": avg, "max": avg}


def test_counter() -> None:
    # 12.5 Wh in a minute: 12,500 mWh, and 12.5 Wh x 60 = 750 W average = 750,000 mW.
    assert sensor_minute("m", {"unit": "Wh", "sum": 12.5}) == SensorMinute(
        "m", True, 12_500, 750_000
    )
    # 0.0123 Wh: 12.3 mWh -> 12; 0.738 W -> 738 mW.
    assert sensor_minute("m", {"unit": "Wh", "sum": 0.0123}) == SensorMinute("m", True, 12, 738)


def test_power_gauge_in_watts_and_kilowatts() -> None:
    # 1,234.5678 W for a minute: 1,234,567.8 mW -> 1,234,568; /60 = 20,576.13 mWh -> 20,576.
    assert sensor_minute("p", gauge("W", 1234.5678)) == SensorMinute("p", True, 20_576, 1_234_568)
    # 1.5 kW: 1,500,000 mW; a minute of it is 25,000 mWh.
    assert sensor_minute("p", gauge("kW", 1.5)) == SensorMinute("p", True, 25_000, 1_500_000)
    # Export shows as negative power, and stays negative.
    assert sensor_minute("p", gauge("W", -600)) == SensorMinute("p", True, -10_000, -600_000)


def test_half_to_even() -> None:
    # 0.03 W: 30 mW, 0.5 mWh -> 0 (even); 0.09 W: 1.5 mWh -> 2; 0.15 W: 2.5 mWh -> 2.
    assert sensor_minute("p", gauge("W", 0.03)) == SensorMinute("p", True, 0, 30)
    assert sensor_minute("p", gauge("W", 0.09)) == SensorMinute("p", True, 2, 90)
    assert sensor_minute("p", gauge("W", 0.15)) == SensorMinute("p", True, 2, 150)
    # 0.0005 Wh = 0.5 mWh -> 0; 0.0015 Wh = 1.5 mWh -> 2; -0.0025 Wh = -2.5 mWh -> -2.
    assert sensor_minute("m", {"unit": "Wh", "sum": 0.0005}) == SensorMinute("m", True, 0, 30)
    assert sensor_minute("m", {"unit": "Wh", "sum": 0.0015}) == SensorMinute("m", True, 2, 90)
    assert sensor_minute("m", {"unit": "Wh", "sum": -0.0025}) == SensorMinute("m", True, -2, -150)
    # The shortest repr, not the binary value: the double nearest 0.0005 lies just above it,
    # so rounding the binary value would give 1 mWh.
    assert Fraction(0.0005) > Fraction("0.0005")


def test_rounding_matches_decimal_reference() -> None:
    """The integer arithmetic equals Decimal(repr(x)) with ROUND_HALF_EVEN, on random values."""
    rng = random.Random(11)
    values = [rng.uniform(-5e4, 5e4) for _ in range(3000)]
    values += [round(rng.uniform(0, 100), rng.randint(0, 4)) for _ in range(3000)]
    values += [k * 0.03 for k in range(200)] + [1e-7, 5e-324, 1.5e11, 3, -7, 1e21 / 1e10]
    for value in values:
        d = Decimal(repr(value))
        ratio = exact(value)
        assert ratio is not None and Fraction(*ratio) == Fraction(d)
        # A minute's energy (x 1000 / 60) need not terminate in decimal: the reference is
        # the exact fraction, rounded half to even by Python's round().
        want_energy = round(Fraction(d) * 1000 / 60)
        want_power = int((d * 1000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        assert sensor_minute("p", gauge("W", value)) == SensorMinute(
            "p", True, want_energy, want_power
        )
        counter = sensor_minute("m", {"unit": "Wh", "sum": value})
        assert counter == SensorMinute(
            "m",
            True,
            int((d * 1000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)),
            int((d * 60_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)),
        )


def test_half_even_integers() -> None:
    assert [half_even(n, 2) for n in (-3, -1, 1, 3, 5)] == [-2, 0, 0, 2, 2]
    assert half_even(7, 3) == 2 and half_even(-7, 3) == -2 and half_even(8, 3) == 3


def test_non_energy_and_missing() -> None:
    assert sensor_minute("t", gauge("Cel", 21.5)) == SensorMinute("t", True, None, None)
    assert sensor_minute("t", gauge("Cel", None)) == SensorMinute("t", False, None, None)
    assert sensor_minute("w", gauge("W", None)) == SensorMinute("w", False, None, None)
    # Apparent power is not energy.
    assert sensor_minute("c", gauge("VA", 230.0)) == SensorMinute("c", True, None, None)
    switch = {"unit": "bool", "any": True, "on_fraction": 0.25}
    assert sensor_minute("f", switch) == SensorMinute("f", True, None, None)
    assert sensor_minute("f", {**switch, "n": 0, "missing": 60}) == SensorMinute(
        "f", False, None, None
    )
    # A counter with no sample reports sum 0: a missing minute, not zero energy.
    idle = {"unit": "Wh", "sum": 0, "n": 0, "missing": 12}
    assert sensor_minute("m", idle) == SensorMinute("m", False, None, None)
    # Implausible: present, but no energy.
    assert sensor_minute("m", {"unit": "Wh", "sum": 2e12}) == SensorMinute("m", True, None, None)
    # Not a reading at all.
    assert sensor_minute("x", "12 W") is None
    assert sensor_minute("x", {"sum": 1}) is None
    assert sensor_minute("m", {"unit": "Wh", "sum": True}) == SensorMinute("m", True, None, None)


@pytest.mark.parametrize(
    "start", ["2026-11-22T10:15:30Z", "2026-11-22T10:15:00", "2026-11-22 10:15:00Z",
              "2026-13-22T10:15:00Z", "2026-W47-1T10:15:00Z", 5, None]
)  # fmt: skip
def test_start_must_be_the_contracts_minute(start: object) -> None:
    minute = {
        "device_id": "d1",
        "seq": 1,
        "start": start,
        "readings": {"m": {"unit": "Wh", "sum": 1}},
    }
    assert energy_minute(minute) is None


def test_hour_fold() -> None:
    """Three minutes of one hour, one of the next, given out of order; a missing minute."""
    entries = [
        (
            7,
            "d1",
            payload("2026-11-22T10:02:00Z", pv=gauge("W", 600.0), m={"unit": "Wh", "sum": 5}),
        ),
        (
            3,
            "d1",
            payload("2026-11-22T10:00:00Z", pv=gauge("W", 1200.0), m={"unit": "Wh", "sum": 20}),
        ),
        (
            5,
            "d1",
            payload("2026-11-22T10:01:00Z", pv=gauge("W", None), m={"unit": "Wh", "sum": 20}),
        ),
        (9, "d1", payload("2026-11-22T11:00:00Z", pv=gauge("W", 60.0))),
    ]
    got = {(r.sensor, r.hour.hour): r for r in rollups([(*e, tag(e[0])) for e in entries])}
    assert sorted(got) == [("m", 10), ("pv", 10), ("pv", 11)]
    meter, pv, later = got["m", 10], got["pv", 10], got["pv", 11]
    # Meter: 20 + 20 + 5 Wh = 45,000 mWh; peak 20 Wh in a minute = 1,200 W, first at 10:00.
    assert (meter.minutes, meter.energy_mwh, meter.peak_mw) == (3, 45_000, 1_200_000)
    assert meter.peak_minute == HOUR
    assert (meter.first_idx, meter.last_idx) == (3, 7)
    # Power: 10:01 had no samples, so 2 minutes (58 missing), 20,000 + 10,000 mWh.
    assert (pv.minutes, pv.energy_mwh, pv.peak_mw) == (2, 30_000, 1_200_000)
    assert pv.hour == HOUR and pv.first_idx == 3 and pv.last_idx == 7
    assert (later.minutes, later.energy_mwh, later.peak_minute) == (1, 1_000, HOUR.replace(hour=11))


def test_equal_peaks_take_the_earliest_minute_in_any_order() -> None:
    entries = [
        (1, "d1", payload("2026-11-22T10:30:00Z", p=gauge("W", 100.0))),
        (2, "d1", payload("2026-11-22T10:10:00Z", p=gauge("W", 100.0))),
        (3, "d1", payload("2026-11-22T10:50:00Z", p=gauge("W", 100.0))),
    ]
    for order in (entries, entries[::-1], entries[1:] + entries[:1]):
        [hour] = rollups([(*e, tag(e[0])) for e in order])
        assert hour.peak_minute == HOUR.replace(minute=10)


def test_only_minutes_with_energy_or_power_are_rolled_up() -> None:
    minute = payload(
        "2026-11-22T10:00:00Z",
        t=gauge("Cel", 21.0),
        pump={"unit": "bool", "any": True, "on_fraction": 0.5},
        silent={"unit": "W", "n": 0, "missing": 12},
        absurd={"unit": "Wh", "sum": 10.0**13},
        pv=gauge("W", 600.0),
    )
    [hour] = rollups([(0, "d1", minute, tag(0))])
    assert (hour.sensor, hour.minutes, hour.energy_mwh) == ("pv", 1, 10_000)


def test_chains_follow_log_order_and_each_entry_counts_once() -> None:
    """Hand-computed: a rollup's chain is SHA-256(chain || tag id) over its entries in log
    order, whatever order they are given in; an entry with two rolled-up sensors is in both
    chains and counted once, in the first sensor's row (code point order: "m" < "pv")."""
    entries = [
        (9, "d1", payload("2026-11-22T10:01:00Z", pv=gauge("W", 60.0), m={"unit": "Wh", "sum": 1})),
        (4, "d1", payload("2026-11-22T10:00:00Z", pv=gauge("W", 60.0), t=gauge("Cel", 20.0))),
        (6, "d1", payload("2026-11-22T10:02:00Z", t=gauge("Cel", 20.0))),  # nothing rolled up
    ]
    for order in (entries, entries[::-1]):
        meter, pv = rollups([(*e, tag(e[0])) for e in order])
        assert (meter.sensor, meter.entries, pv.sensor, pv.entries) == ("m", 1, "pv", 1)
        assert meter.chain == hashlib.sha256(tag(9)).digest()
        assert pv.chain == hashlib.sha256(hashlib.sha256(tag(4)).digest() + tag(9)).digest()
