"""Minute aggregation with exact semantics, and the payloads built from a minute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edge.drivers import Channel

PERIOD_S = 60
# Aggregates are rounded so their JCS bytes are short and stable; 4 decimals keep the
# DS18B20's 0.0625 °C steps exact.
DIGITS = 4
# Patio hubs skip readings of 0.001 W or less (seed 000, EnergyMonitor).
LEGACY_MIN_W = 0.001
# The Patio hub's datetime, as in its patio_save_energy example ("2021-10-10 10:10").
LEGACY_DATETIME = "%Y-%m-%d %H:%M"


def _round(value: float) -> float:
    rounded = round(value, DIGITS)
    return 0.0 if rounded == 0 else rounded  # no "-0" in the payload


def gauge(unit: str, values: Sequence[float | None]) -> dict[str, Any]:
    """n, missing, avg, min, max over present samples; missing ones are counted, not averaged."""
    present = [v for v in values if v is not None]
    n = len(present)
    return {
        "unit": unit,
        "n": n,
        "missing": len(values) - n,
        "avg": _round(sum(present) / n) if n else None,
        "min": _round(min(present)) if n else None,
        "max": _round(max(present)) if n else None,
    }


def counter(unit: str, values: Sequence[float | None], baseline: float | None) -> dict[str, Any]:
    """Sum of the counter's increments in the window, in Wh, with n and missing.

    Each present sample adds its increase over the previous present sample (which may lie
    in an earlier minute: `baseline`). A drop means the counter restarted from zero (a
    Tasmota reset or power cut), so the sample's whole value is the increase. With no
    present sample the sum is 0 and n = 0 says why (the contract requires a number).
    """
    total = 0.0
    present = 0
    previous = baseline
    for value in values:
        if value is None:
            continue
        present += 1
        if previous is not None:
            total += value - previous if value >= previous else value
        previous = value
    return {"unit": unit, "sum": _round(total), "n": present, "missing": len(values) - present}


def state(values: Sequence[float | None]) -> dict[str, Any]:
    """any and on_fraction over present on/off samples, with n and missing."""
    present = [v for v in values if v is not None]
    on = sum(1 for v in present if v >= 0.5)
    return {
        "unit": "bool",
        "any": on > 0,
        "on_fraction": _round(on / len(present)) if present else 0.0,
        "n": len(present),
        "missing": len(values) - len(present),
    }


def readings(
    channels: Mapping[str, Channel],
    window: Mapping[str, Sequence[float | None]],
    baselines: Mapping[str, float | None],
) -> dict[str, dict[str, Any]]:
    """The `readings` object of one minute: every channel with samples in the window."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(window):
        channel = channels.get(name)
        if channel is None:
            continue  # samples of a channel never registered: nothing says how to reduce them
        values = window[name]
        if channel.kind == "gauge":
            out[name] = gauge(channel.unit, values)
        elif channel.kind == "counter":
            out[name] = counter(channel.unit, values, baselines.get(name))
        else:
            out[name] = state(values)
    return out


def minute_start(start_ms: int) -> str:
    """RFC 3339 UTC on the minute: 2026-11-22T10:15:00Z."""
    return datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def energy_minute(
    *, device_id: str, seq: int, start_ms: int, readings: Mapping[str, Any]
) -> dict[str, Any]:
    """The energy_minute payload (DESIGN.md, Contracts)."""
    return {
        "device_id": device_id,
        "seq": seq,
        "start": minute_start(start_ms),
        "period_s": PERIOD_S,
        "readings": dict(readings),
    }


def legacy_amount(watts: float) -> str:
    """Patio's amount string: "5W", "203.5W"."""
    text = f"{watts:.3f}".rstrip("0").rstrip(".")
    return f"{text}W"


def legacy_records(
    *,
    start_ms: int,
    readings: Mapping[str, Mapping[str, Any]],
    types: Mapping[str, str],
    community: str,
) -> list[dict[str, str]]:
    """Patio `dataToStore` objects: the minute's average of each W gauge above 0.001 W."""
    moment = datetime.fromtimestamp(start_ms / 1000, UTC).strftime(LEGACY_DATETIME)
    records = []
    for name, reading in readings.items():
        average = reading.get("avg")
        if reading.get("unit") != "W" or average is None or average <= LEGACY_MIN_W:
            continue
        records.append(
            {
                "amount": legacy_amount(average),
                "datetime": moment,
                "sensor_id": name,
                "type": types.get(name, "consumption"),
                "community_unique_id": community,
            }
        )
    return records
