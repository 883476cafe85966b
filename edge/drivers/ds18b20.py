"""DS18B20 1-Wire temperature sensor through w1thermsensor (sysfs `w1_slave` files)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.drivers import Channel, Context, Sample

if TYPE_CHECKING:
    from edge.clock import Clock
    from edge.config import Section

log = logging.getLogger("patio.edge.ds18b20")

# The Linux w1 bus driver's sysfs folder (Documentation/w1/slaves/w1_therm.rst).
DEFAULT_BASE = "/sys/bus/w1/devices"
# DS18B20 family code: sysfs names the device "28-<serial>".
FAMILY_PREFIX = "28-"
SERIAL = re.compile(r"^(28-)?[0-9a-f]{12}$")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Options of one DS18B20."""

    name: str
    serial: str
    base_dir: Path
    retries: int
    retry_delay_s: float
    offset_c: float

    def channels(self) -> list[Channel]:
        """One temperature gauge in degrees Celsius."""
        return [Channel(self.name, "gauge", "Cel")]

    def open(self, clock: Clock) -> DS18B20:
        """The sensor (not probed yet: a sensor plugged in later is picked up then)."""
        return DS18B20(self)


def parse(section: Section, context: Context) -> Settings:
    """Validate the DS18B20 options."""
    serial = section.text("sensor_id", pattern=SERIAL).removeprefix(FAMILY_PREFIX)
    return Settings(
        name=context.name,
        serial=serial,
        base_dir=section.path("w1_base_dir", DEFAULT_BASE, base=context.base),
        retries=section.integer("retries", 3, minimum=1, maximum=20),
        retry_delay_s=section.number("retry_delay_s", 0.1, minimum=0, maximum=5),
        offset_c=section.number("offset_c", 0.0, minimum=-20, maximum=20),
    )


class DS18B20:
    """Reads one DS18B20; CRC failures and power-on values are retried, then missing."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        # w1thermsensor runs `modprobe` on import unless told not to; the agent is not
        # root, and Raspberry Pi OS loads the modules through the w1-gpio overlay.
        os.environ.setdefault("W1THERMSENSOR_NO_KERNEL_MODULE", "1")
        import w1thermsensor

        self.settings = settings
        self._sleep = sleep
        self._w1 = w1thermsensor
        # BASE_DIRECTORY is a class attribute; a subclass points one sensor at its own tree.
        self._sensor_class: Any = type(
            "PatioW1ThermSensor",
            (w1thermsensor.W1ThermSensor,),
            {"BASE_DIRECTORY": settings.base_dir},
        )
        self._answering = True

    def read(self, now: float) -> list[Sample]:
        """One temperature sample, or a missing one if the sensor does not answer."""
        return [Sample.of(self.settings.name, now, self._temperature())]

    def _temperature(self) -> float | None:
        errors = self._w1.errors
        problem = ""
        for attempt in range(self.settings.retries):
            if attempt:
                self._sleep(self.settings.retry_delay_s)
            try:
                sensor = self._sensor_class(self._w1.Sensor.DS18B20, self.settings.serial)
                value = float(sensor.get_temperature()) + self.settings.offset_c
            except errors.NoSensorFoundError:
                problem = "not found (unplugged?)"
                break  # no file: retrying will not make it appear
            except errors.SensorNotReadyError:
                problem = "CRC check failed"
            except errors.ResetValueError:
                problem = "returned the 85 °C power-on value"
            except (errors.W1ThermSensorError, OSError, ValueError, IndexError) as exc:
                problem = f"unreadable: {exc}"
            else:
                if not self._answering:
                    log.info("sensor %s answers again", self.settings.name)
                self._answering = True
                return value
        if self._answering:
            log.warning("sensor %s %s; recording missing samples", self.settings.name, problem)
        self._answering = False
        return None

    def close(self) -> None:
        """Nothing to release: each read opens the sysfs file."""
