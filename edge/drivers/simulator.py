"""A seeded, deterministic simulator: solar generation, household load, boiler temperatures,
and a grid meter at the connection of simulated solar arrays and households."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.config import Section
from edge.drivers import Channel, Context, Sample

if TYPE_CHECKING:
    from edge.clock import Clock

KINDS = ("solar", "household", "boiler", "grid")
MEMBER_KINDS = ("solar", "household")  # what a grid meter's members may be
DS18B20_STEP = 0.0625  # the DS18B20's 12-bit resolution in °C


def unit_noise(seed: int, label: str, key: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, label, key)."""
    digest = hashlib.blake2b(f"{seed}:{label}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Options of one simulated sensor."""

    name: str
    kind: str
    seed: int
    peak_w: float
    base_w: float
    setpoint_c: float
    dropout: float
    members: tuple[Settings, ...] = ()  # a grid meter's: the simulators behind it

    def channels(self) -> list[Channel]:
        """Power and energy for solar/household; water, flue and fan for a boiler; net power,
        imported and exported energy for a grid meter."""
        if self.kind == "grid":
            return [
                Channel(f"{self.name}_w", "gauge", "W"),
                Channel(f"{self.name}_import_wh", "counter", "Wh"),
                Channel(f"{self.name}_export_wh", "counter", "Wh"),
            ]
        if self.kind == "boiler":
            return [
                Channel(f"{self.name}_water", "gauge", "Cel"),
                Channel(f"{self.name}_flue", "gauge", "Cel"),
                Channel(f"{self.name}_fan", "state", "bool"),
            ]
        return [
            Channel(f"{self.name}_w", "gauge", "W"),
            Channel(f"{self.name}_wh", "counter", "Wh"),
        ]

    def open(self, clock: Clock) -> Simulator:
        """A simulator with its energy counters at zero."""
        return Simulator(self)


def parse(section: Section, context: Context) -> Settings:
    """Validate the simulator options (a grid meter's `members`, each a table with its own
    kind, seed, peak_w or base_w: the solar and household simulators behind the meter)."""
    kind = section.text("kind", choices=KINDS)
    members: list[Settings] = []
    if kind == "grid":
        for index, table in enumerate(section.tables("members")):
            member = Section(table, f"{section.where} members[{index}]")
            kind_of_member = member.text("kind", choices=MEMBER_KINDS)
            members.append(_settings(member, context.name, kind_of_member))
            member.finish()
        if not members:
            raise section.error("members", "must list the simulators behind the grid meter")
    return _settings(section, context.name, kind, tuple(members))


def _settings(
    section: Section, name: str, kind: str, members: tuple[Settings, ...] = ()
) -> Settings:
    return Settings(
        name=name,
        kind=kind,
        seed=section.integer("seed", 1, minimum=0, maximum=2**63 - 1),
        peak_w=section.number("peak_w", 4000.0, minimum=0),
        base_w=section.number("base_w", 180.0, minimum=0),
        setpoint_c=section.number("setpoint_c", 65.0, minimum=20, maximum=95),
        dropout=section.number("dropout", 0.0, minimum=0, maximum=1),
        members=members,
    )


def solar_power(seed: int, ts: float, peak_w: float) -> float:
    """PV output: a half-sine daylight curve from 06:00 to 18:00 UTC under drifting clouds."""
    hour = (ts % 86400) / 3600
    if not 6 <= hour <= 18:
        return 0.0
    daylight = math.sin(math.pi * (hour - 6) / 12)
    cloudiness = unit_noise(seed, "day", int(ts // 86400))
    slot, within = divmod(ts / 900, 1.0)  # clouds change every 15 minutes, linearly
    here = unit_noise(seed, "cloud", int(slot))
    after = unit_noise(seed, "cloud", int(slot) + 1)
    shade = 1 - 0.7 * cloudiness * (here + (after - here) * within)
    jitter = 1 + 0.01 * (unit_noise(seed, "pv", int(ts)) - 0.5)
    return peak_w * daylight * shade * jitter


def household_power(seed: int, ts: float, base_w: float) -> float:
    """Base load, a fridge cycling every 30 minutes, evening lights and appliance runs."""
    power = base_w
    phase = unit_noise(seed, "fridge", 0) * 1800
    if (ts + phase) % 1800 < 720:
        power += 90.0
    hour = (ts % 86400) / 3600
    if 18 <= hour < 23:
        power += 200.0
    slot = int(ts // 600)  # one chance of an appliance run (kettle, washer) per 10 minutes
    if unit_noise(seed, "appliance", slot) < 0.15:
        start = slot * 600 + unit_noise(seed, "start", slot) * 300
        length = 120 + unit_noise(seed, "length", slot) * 240
        if start <= ts < start + length:
            power += 1500 + 700 * unit_noise(seed, "load", slot)
    return power * (1 + 0.02 * (unit_noise(seed, "house", int(ts)) - 0.5))


def boiler_state(seed: int, ts: float, setpoint_c: float) -> tuple[float, float, bool]:
    """(water °C, flue °C, fan on): a burner firing 4 of every 12 minutes around the setpoint."""
    cycle, burn = 720.0, 240.0
    low, high = setpoint_c - 4, setpoint_c + 2
    phase = (ts + unit_noise(seed, "boiler", 0) * cycle) % cycle
    firing = phase < burn
    if firing:
        water = low + (high - low) * phase / burn
        flue = water + 120 * (1 - math.exp(-phase / 60))
    else:
        water = high - (high - low) * (phase - burn) / (cycle - burn)
        flue = water + 120 * (1 - math.exp(-burn / 60)) * math.exp(-(phase - burn) / 90)
    noise = (unit_noise(seed, "water", int(ts)) - 0.5) * 0.2
    return _ds18b20(water + noise), _ds18b20(flue + noise), firing


def _ds18b20(celsius: float) -> float:
    return round(celsius / DS18B20_STEP) * DS18B20_STEP


def power(settings: Settings, ts: float) -> float:
    """A solar array's output or a household's load; a grid meter's net power (positive:
    drawn from the grid), the members' loads less their generation."""
    if settings.kind == "solar":
        return solar_power(settings.seed, ts, settings.peak_w)
    if settings.kind == "household":
        return household_power(settings.seed, ts, settings.base_w)
    assert settings.kind == "grid"
    return sum(-power(m, ts) if m.kind == "solar" else power(m, ts) for m in settings.members)


class Simulator:
    """Produces the same samples for the same seed and read times."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._energy_wh = 0.0
        self._export_wh = 0.0  # a grid meter's second counter
        self._last: tuple[float, float] | None = None  # (ts, power) of the previous read

    def read(self, now: float) -> list[Sample]:
        """Samples at `now`; a dropout gives missing samples."""
        s = self.settings
        dropped = (
            s.dropout > 0 and unit_noise(s.seed, f"dropout:{s.name}", int(now * 1000)) < s.dropout
        )
        if s.kind == "boiler":
            water, flue, fan = boiler_state(s.seed, now, s.setpoint_c)
            values: list[float | None] = [water, flue, float(fan)]
        else:
            watts = power(s, now)
            if self._last is not None and now > self._last[0]:
                # Trapezoid rule between reads: the counter a real meter would show. A grid
                # meter's is the members' counters netted over the same interval: it counts
                # what the households drew beyond the solar output as import, the rest as
                # export (a bidirectional meter nets within each interval between reads).
                energy = (watts + self._last[1]) / 2 * (now - self._last[0]) / 3600
                self._energy_wh += max(0.0, energy) if s.kind == "grid" else energy
                self._export_wh += max(0.0, -energy) if s.kind == "grid" else 0.0
            self._last = (now, watts)
            values = [watts, self._energy_wh]
            if s.kind == "grid":
                values.append(self._export_wh)
        return [
            Sample.of(channel.name, now, None if dropped else value)
            for channel, value in zip(s.channels(), values, strict=True)
        ]

    def close(self) -> None:
        """Nothing to release."""
