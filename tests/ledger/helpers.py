"""Builders shared by the ledger tests: signed submissions for a device."""

from __future__ import annotations

from typing import Any

from ledger.keys import NamedKey
from ledger.log import Submission

CONTRACT = "energy_minute@1"


def minute_payload(device_id: str, seq: int, **readings: Any) -> dict[str, Any]:
    """A small energy_minute-shaped payload."""
    minute = seq % 60
    return {
        "device_id": device_id,
        "seq": seq,
        "start": f"2026-11-22T10:{minute:02d}:00Z",
        "period_s": 60,
        "readings": readings
        or {"t1": {"unit": "Cel", "n": 12, "missing": 0, "avg": 21.5, "min": 21.0, "max": 22.25}},
    }


def submission(key: NamedKey, seq: int, **readings: Any) -> Submission:
    """A signed submission from the device `key` names."""
    payload = minute_payload(key.name, seq, **readings)
    return Submission(
        contract=CONTRACT,
        payload=payload,
        sig=key.sign_payload(payload),
        device_id=key.name,
        seq=seq,
    )
