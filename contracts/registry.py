"""The registry of contracts the gateway runs, by name."""

from __future__ import annotations

from contracts.base import Contract
from contracts.energy_minute import EnergyMinuteContract
from contracts.patio import PatioLoadEnergyLog, PatioSaveEnergy

CONTRACTS: dict[str, Contract] = {
    contract.name: contract
    for contract in (EnergyMinuteContract(), PatioSaveEnergy(), PatioLoadEnergyLog())
}
