"""The shipped device types count each sensor's energy once."""

from __future__ import annotations

from contracts.device_types import catalog
from contracts.energy.minute import ENERGY_UNITS

SUMMED_ROLES = {"generation", "consumption", "grid_import", "grid_export"}


def test_no_type_declares_two_energy_readings_for_one_role() -> None:
    for device_type in catalog().values():
        summed = [
            profile.role
            for _, profile in device_type.readings
            if profile.role in SUMMED_ROLES and profile.unit in ENERGY_UNITS
        ]
        assert len(summed) == len(set(summed)), device_type.name
