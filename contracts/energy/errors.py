"""Errors of the energy arithmetic: bad periods, bad or incomplete tariffs, unusable input."""

from __future__ import annotations


class EnergyError(Exception):
    """Base of every error the energy arithmetic raises; `str()` is the message for a person."""


class PeriodError(EnergyError):
    """A period that cannot be built: a bad date range, a zone whose offset splits an hour."""


class TariffError(EnergyError):
    """A tariff file that does not validate, or an hour it cannot price."""


class MissingHolidayData(TariffError):
    """The tariff's calendar needs public holidays for a year its data does not cover."""


class ReportError(EnergyError):
    """Report input that does not fit together (e.g. a power term with no contracted power)."""
