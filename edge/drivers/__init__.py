"""The driver interface every sensor implements, and the registry that builds them."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edge.config import SENSOR_NAME, Section

if TYPE_CHECKING:
    from edge.clock import Clock
    from edge.config import MqttSettings

# gauge: instantaneous value (n/avg/min/max); counter: monotonic total that may reset
# (sum of increments); state: on/off as 1.0/0.0 (any/on_fraction).
Kind = Literal["gauge", "counter", "state"]

# Each driver is one module; importing it must stay cheap (hardware libraries are
# imported when a driver is opened), so `patio edge status` loads none of them.
DRIVER_MODULES = {
    "ds18b20": "edge.drivers.ds18b20",
    "ads1115": "edge.drivers.ads1115",
    "tasmota": "edge.drivers.tasmota",
    "simulator": "edge.drivers.simulator",
}


@dataclass(frozen=True)
class Channel:
    """One named reading a driver produces, with its kind and unit (SenML unit names)."""

    name: str
    kind: Kind
    unit: str


@dataclass(frozen=True)
class Sample:
    """One raw sample; `value` None means the sensor did not answer (a missing sample)."""

    channel: str
    ts: float
    value: float | None

    @classmethod
    def of(cls, channel: str, ts: float, value: float | None) -> Sample:
        """A sample, turning a non-finite value into a missing one."""
        if value is not None and not math.isfinite(value):
            value = None
        return cls(channel, ts, value)


class Driver(Protocol):
    """An opened sensor: read it now, close it when the agent stops."""

    def read(self, now: float) -> list[Sample]:
        """The samples available at `now`; a sensor that does not answer gives value None."""
        ...

    def close(self) -> None:
        """Release the hardware or connection."""
        ...


class DriverSettings(Protocol):
    """A driver's validated options: the channels it will produce, and how to open it."""

    def channels(self) -> list[Channel]:
        """The readings this sensor produces."""
        ...

    def open(self, clock: Clock) -> Driver:
        """Open the sensor."""
        ...


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a driver's option parser may need besides its own table."""

    name: str
    mqtt: MqttSettings
    base: Path


@dataclass(frozen=True, kw_only=True)
class SensorSpec:
    """One [[sensor]] table: its name, driver, poll interval and driver settings."""

    name: str
    driver: str
    interval_s: float
    legacy_type: str
    settings: DriverSettings

    @property
    def channels(self) -> list[Channel]:
        """The readings this sensor produces."""
        return self.settings.channels()


def parse_sensor(
    table: Mapping[str, Any], *, index: int, mqtt: MqttSettings, base: Path
) -> SensorSpec:
    """Validate one [[sensor]] table with its driver's own option parser."""
    name = table.get("name")
    section = Section(table, f"sensor {name!r}" if isinstance(name, str) else f"sensor #{index}")
    name = section.text("name", pattern=SENSOR_NAME)
    driver = section.text("driver", choices=tuple(DRIVER_MODULES))
    interval_s = section.number("interval_s", 1.0 if driver != "tasmota" else 10.0, above=0)
    legacy_type = section.text("legacy_type", "consumption")
    module = importlib.import_module(DRIVER_MODULES[driver])
    settings: DriverSettings = module.parse(section, Context(name=name, mqtt=mqtt, base=base))
    section.finish()
    return SensorSpec(
        name=name,
        driver=driver,
        interval_s=interval_s,
        legacy_type=legacy_type,
        settings=settings,
    )
