"""The hourly rollup: one device's sensor over one UTC hour, built from logged minutes."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class HourlyRollup(NamedTuple):
    """What the minutes of one (device, sensor, UTC hour) add up to.

    `energy_mwh` is None for a sensor that measures no energy (a temperature, a switch);
    missing minutes are `60 - minutes`, never filled with zero. `first_idx` and `last_idx`
    are the lowest and highest log indexes the rollup was built from. `entries` counts the
    entries whose first rolled-up sensor (code point order) this is, and `chain` is the
    SHA-256 chain over the log tag ids of all entries folded in, in log order
    (contracts/energy/minute.py `extend_chain`; None when unknown, docs/rollups.md). A sum
    over several hours (contracts/energy/aggregate.py) leaves both at their defaults. A
    named tuple, not a dataclass: a day's report builds 1,440 of them, at a third of a
    frozen dataclass's cost.
    """

    device_id: str
    sensor: str
    hour: datetime  # aware, UTC, on the hour
    minutes: int  # minutes with a reading of this sensor, 0..60
    energy_mwh: int | None  # milliwatt-hours over those minutes
    peak_mw: int | None  # the highest one-minute average power, milliwatts
    peak_minute: datetime | None  # the minute of that peak (UTC)
    first_idx: int
    last_idx: int
    entries: int = 0
    chain: bytes | None = b""
