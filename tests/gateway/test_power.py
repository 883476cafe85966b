"""Power figures of GET /v1/communities/{id}/latest, from each reading's unit."""

from __future__ import annotations

import pytest

from gateway.routes.communities import average_watts


@pytest.mark.parametrize(
    ("reading", "watts"),
    [
        ({"unit": "W", "n": 12, "missing": 0, "avg": 600.0}, 600.0),
        ({"unit": "kW", "n": 12, "missing": 0, "avg": 1.5}, 1500.0),
        ({"unit": "Wh", "sum": 20.0}, 1200.0),  # 20 Wh in one minute is 1.2 kW on average
        ({"unit": "Wh", "sum": 1e308}, None),  # overflows to inf: no figure, not inf
        ({"unit": "W", "n": 0, "missing": 12, "avg": None}, None),  # every sample missing
        ({"unit": "Cel", "avg": 61.5}, None),
        ({"unit": "bool", "any": True, "on_fraction": 0.25}, None),
        ("5W", None),
    ],
)
def test_average_watts(reading: object, watts: float | None) -> None:
    assert average_watts(reading) == watts
