"""Sensor roles and device types: what each reading of a device measures, declared, not
guessed from its name.

A device's profile maps each reading name to its role and unit (and, from a type, a
plausible range); it is recorded on the log with the registration or a `set_device_profile`
change. Device types are data (`device_types.toml`, one per edge driver), so registering a
simulator, a clamp meter or a Tasmota plug needs one word.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Role = Literal[
    "generation", "consumption", "grid_import", "grid_export", "temperature", "switch", "other"
]
ROLES: tuple[str, ...] = get_args(Role)
ENERGY_ROLES = frozenset({"generation", "consumption", "grid_import", "grid_export"})
# The units a role may be measured in (SenML names, as the edge drivers write them).
UNITS_BY_ROLE: dict[str, frozenset[str]] = {
    **{role: frozenset({"W", "kW", "Wh", "kWh", "VA"}) for role in ENERGY_ROLES},
    "temperature": frozenset({"Cel", "K"}),
    "switch": frozenset({"bool"}),
}
READING_NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # as the edge agent names readings (edge/config.py)
UNIT = r"^[A-Za-z0-9%/._-]{1,16}$"
MAX_SENSORS = 64
CATALOG = "device_types.toml"


class ProfileError(ValueError):
    """A profile or device type that cannot be used; the message says why."""


class SensorProfile(BaseModel):
    """One reading's declared role and unit, and optionally its plausible range."""

    model_config = ConfigDict(strict=True, extra="forbid")

    role: Role
    unit: str = Field(pattern=UNIT)
    min: int | float | None = None
    max: int | float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SensorProfile:
        allowed = UNITS_BY_ROLE.get(self.role)
        if allowed is not None and self.unit not in allowed:
            raise ValueError(f"a {self.role} reading is in {sorted(allowed)}, not {self.unit!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


class Profile(BaseModel):
    """A device's sensors by reading name, and the type they came from (if any)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    type: str | None = None
    sensors: dict[str, SensorProfile] = Field(max_length=MAX_SENSORS)

    @model_validator(mode="after")
    def _names(self) -> Profile:
        for name in self.sensors:
            if not re.fullmatch(READING_NAME, name):
                raise ValueError(f"reading name {name!r} does not match {READING_NAME}")
        return self

    def recorded(self) -> dict[str, Any]:
        """The profile as the registry entry records it (no unset ranges)."""
        return self.model_dump(exclude_none=True)


@dataclass(frozen=True, kw_only=True)
class DeviceType:
    """A kind of device: the readings one of its sensors reports."""

    name: str
    summary: str
    driver: str
    sensor: str  # the sensor name the readings are named after, unless a registration says
    readings: tuple[tuple[str, SensorProfile], ...]  # (suffix, profile)

    def profile(self, sensor: str | None = None) -> Profile:
        """The profile of a device with one sensor of this type called `sensor`."""
        prefix = self.sensor if sensor is None else sensor
        sensors = {prefix + suffix: reading for suffix, reading in self.readings}
        return Profile(type=self.name, sensors=sensors)


@functools.cache
def catalog() -> dict[str, DeviceType]:
    """The device types shipped with the project, by name."""
    text = resources.files("contracts").joinpath(CATALOG).read_text()
    types = {}
    for name, spec in tomllib.loads(text).items():
        try:
            readings = tuple(
                (str(r["suffix"]), SensorProfile.model_validate(
                    {k: v for k, v in r.items() if k != "suffix"}))
                for r in spec["readings"]
            )  # fmt: skip
            types[name] = DeviceType(
                name=name,
                summary=spec["summary"],
                driver=spec["driver"],
                sensor=spec["sensor"],
                readings=readings,
            )
        except (KeyError, TypeError, ValidationError) as exc:
            raise ProfileError(f"{CATALOG}: type {name!r} is malformed: {exc}") from exc
    return types


def resolve(
    *, type_name: str | None, sensor: str | None, profile: Profile | None
) -> dict[str, Any] | None:
    """The profile to record: the type's, with an explicit profile's sensors overriding;
    None when neither is given (the device declares nothing)."""
    if profile is not None and profile.type is not None and profile.type != type_name:
        raise ProfileError("give the device type as 'type', beside the profile, not in it")
    if type_name is None:
        if sensor is not None:
            raise ProfileError("'sensor' names the sensor of a 'type'; give a type too")
        return None if profile is None else profile.recorded()
    device_type = catalog().get(type_name)
    if device_type is None:
        raise ProfileError(f"no device type {type_name!r}; known: {', '.join(sorted(catalog()))}")
    if sensor is not None and not re.fullmatch(READING_NAME, sensor):
        raise ProfileError(f"sensor {sensor!r} does not match {READING_NAME}")
    merged = device_type.profile(sensor)
    if profile is not None:
        merged = Profile(type=type_name, sensors={**merged.sensors, **profile.sensors})
    return merged.recorded()


def roles(profile: Any) -> dict[str, str]:
    """Reading name to role, from a recorded profile (empty when none was declared)."""
    if not isinstance(profile, dict) or not isinstance(profile.get("sensors"), dict):
        return {}
    return {
        name: sensor["role"]
        for name, sensor in profile["sensors"].items()
        if isinstance(sensor, dict) and isinstance(sensor.get("role"), str)
    }
