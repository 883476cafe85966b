"""ADS1115 ADC over I2C (smbus2) reading an SCT-013 current clamp: RMS current, VA, on/off."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge.drivers import Channel, Context, Sample

if TYPE_CHECKING:
    from edge.clock import Clock
    from edge.config import Section

log = logging.getLogger("patio.edge.ads1115")

# ADS1115 datasheet (TI SBAS444), section 8.6 "Register Map".
REG_CONVERSION = 0x00
REG_CONFIG = 0x01
# Config register fields (section 8.6.3).
MUX = {  # bits 14:12
    "a0-a1": 0b000, "a0-a3": 0b001, "a1-a3": 0b010, "a2-a3": 0b011,
    "a0": 0b100, "a1": 0b101, "a2": 0b110, "a3": 0b111,
}  # fmt: skip
PGA = {6.144: 0b000, 4.096: 0b001, 2.048: 0b010, 1.024: 0b011, 0.512: 0b100, 0.256: 0b101}
DATA_RATE = {  # bits 7:5, samples per second
    8: 0b000, 16: 0b001, 32: 0b010, 64: 0b011, 128: 0b100, 250: 0b101, 475: 0b110, 860: 0b111,
}  # fmt: skip
MODE_CONTINUOUS = 0
COMPARATOR_OFF = 0b11  # COMP_QUE = 11: comparator disabled, ALERT/RDY high impedance
FULL_SCALE_COUNTS = 32768  # 16-bit two's complement


class I2CBus(Protocol):
    """The two smbus2.SMBus calls the driver uses."""

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int]) -> None:
        """Write bytes to a register."""
        ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        """Read bytes from a register."""
        ...

    def close(self) -> None:
        """Release the bus."""
        ...


def config_word(*, mux: str, full_scale_v: float, data_rate: int) -> int:
    """The config register value for continuous conversions with the comparator off."""
    return (
        MUX[mux] << 12
        | PGA[full_scale_v] << 9
        | MODE_CONTINUOUS << 8
        | DATA_RATE[data_rate] << 5
        | COMPARATOR_OFF
    )


def rms_current(counts: Sequence[int], *, full_scale_v: float, amps_per_volt: float) -> float:
    """RMS current of a burst: volts from counts, DC bias removed, scaled by the clamp ratio."""
    volts = [count * full_scale_v / FULL_SCALE_COUNTS for count in counts]
    mean = sum(volts) / len(volts)
    variance = sum((v - mean) ** 2 for v in volts) / len(volts)
    return math.sqrt(variance) * amps_per_volt


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Options of one clamp on one ADS1115 input."""

    name: str
    bus: int
    address: int
    mux: str
    full_scale_v: float
    data_rate: int
    burst: int
    amps_per_volt: float
    calibration: float
    mains_voltage: float
    on_threshold_va: float | None

    def channels(self) -> list[Channel]:
        """Apparent power in VA, and an on/off state when a threshold is set."""
        channels = [Channel(f"{self.name}_va", "gauge", "VA")]
        if self.on_threshold_va is not None:
            channels.append(Channel(f"{self.name}_on", "state", "bool"))
        return channels

    def open(self, clock: Clock) -> ADS1115Clamp:
        """The clamp on the real I2C bus."""
        return ADS1115Clamp(self)


def parse(section: Section, context: Context) -> Settings:
    """Validate the ADS1115/SCT-013 options."""
    full_scale = section.number("full_scale_v", 2.048)
    if full_scale not in PGA:
        raise section.error("full_scale_v", f"must be one of {', '.join(map(str, PGA))}")
    rate = section.integer("data_rate", 860, minimum=8, maximum=860)
    if rate not in DATA_RATE:
        raise section.error("data_rate", f"must be one of {', '.join(map(str, DATA_RATE))}")
    return Settings(
        name=context.name,
        bus=section.integer("i2c_bus", 1, minimum=0, maximum=255),
        address=section.integer("address", 0x48, minimum=0x48, maximum=0x4B),
        mux=section.text("input", "a0-a1", choices=tuple(MUX)),
        full_scale_v=full_scale,
        data_rate=rate,
        burst=section.integer("burst", 128, minimum=16, maximum=4096),
        # SCT-013-030: 30 A primary gives 1 V RMS on its burden resistor.
        amps_per_volt=section.number("amps_per_volt", 30.0, above=0),
        calibration=section.number("calibration", 1.0, above=0),
        mains_voltage=section.number("mains_voltage", 230.0, above=0),
        on_threshold_va=section.optional_number("on_threshold_va", minimum=0),
    )


def _open_smbus(bus: int) -> I2CBus:
    import smbus2

    handle: Any = smbus2.SMBus(bus)
    return handle  # type: ignore[no-any-return]


class ADS1115Clamp:
    """Samples a burst from the ADC each read and reduces it to RMS current and VA."""

    def __init__(
        self,
        settings: Settings,
        *,
        bus_factory: Callable[[int], I2CBus] = _open_smbus,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._bus_factory = bus_factory
        self._sleep = sleep
        self._bus: I2CBus | None = None
        self._answering = True
        self._config = config_word(
            mux=settings.mux, full_scale_v=settings.full_scale_v, data_rate=settings.data_rate
        )

    def read(self, now: float) -> list[Sample]:
        """VA (and on/off) from one burst; missing samples when the ADC does not answer."""
        settings = self.settings
        try:
            counts = self._burst()
        except OSError as exc:
            if self._answering:
                log.warning("ADC of %s does not answer (%s); recording missing samples",
                            settings.name, exc)  # fmt: skip
            self._answering = False
            self._drop_bus()
            va: float | None = None
        else:
            if not self._answering:
                log.info("ADC of %s answers again", settings.name)
            self._answering = True
            amps = rms_current(
                counts, full_scale_v=settings.full_scale_v, amps_per_volt=settings.amps_per_volt
            )
            va = settings.mains_voltage * amps * settings.calibration
        samples = [Sample.of(f"{settings.name}_va", now, va)]
        if settings.on_threshold_va is not None:
            state = None if va is None else float(va >= settings.on_threshold_va)
            samples.append(Sample.of(f"{settings.name}_on", now, state))
        return samples

    def _burst(self) -> list[int]:
        settings = self.settings
        if self._bus is None:
            self._bus = self._bus_factory(settings.bus)
        bus = self._bus
        bus.write_i2c_block_data(
            settings.address, REG_CONFIG, [self._config >> 8 & 0xFF, self._config & 0xFF]
        )
        period = 1.0 / settings.data_rate
        # The first conversion after a config write may hold the previous input's value.
        self._sleep(2 * period)
        counts = []
        for _ in range(settings.burst):
            high, low = bus.read_i2c_block_data(settings.address, REG_CONVERSION, 2)
            raw = high << 8 | low
            counts.append(raw - 0x10000 if raw & 0x8000 else raw)
            self._sleep(period)
        return counts

    def _drop_bus(self) -> None:
        if self._bus is not None:
            with contextlib.suppress(OSError):
                self._bus.close()
            self._bus = None

    def close(self) -> None:
        """Release the I2C bus."""
        self._drop_bus()
