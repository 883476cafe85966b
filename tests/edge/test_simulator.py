"""The seeded simulator: deterministic, plausible, and consistent between power and energy."""

from __future__ import annotations

import itertools

import pytest

from edge.drivers.simulator import DS18B20_STEP, Settings, Simulator
from edge.errors import ConfigError
from tests.edge.conftest import T0, ConfigFactory

NIGHT = T0 - 8 * 3600  # 02:00 UTC
NOON = T0 + 2 * 3600  # 12:00 UTC


def simulator(make_config: ConfigFactory, **options: object) -> Simulator:
    """A simulator as the agent opens it from edge.toml."""
    sensor = {"driver": "simulator", "name": "sim", "kind": "solar", **options}
    parsed = make_config(sensors=[sensor]).sensors[0].settings
    assert isinstance(parsed, Settings)
    return Simulator(parsed)


def run(sim: Simulator, start: float, seconds: int, step: float = 1.0) -> list[list[float | None]]:
    """Values of each read, one list per read."""
    return [[s.value for s in sim.read(start + k * step)] for k in range(int(seconds / step))]


def present(sim: Simulator, start: float, seconds: int, step: float = 1.0) -> list[list[float]]:
    """Values of each read of a simulator without dropouts."""
    reads = run(sim, start, seconds, step)
    return [[v for v in read if v is not None] for read in reads if None not in read]


@pytest.mark.parametrize("kind", ["solar", "household", "boiler"])
def test_same_seed_same_samples(make_config: ConfigFactory, kind: str) -> None:
    first = run(simulator(make_config, kind=kind, seed=11), NOON, 600)
    again = run(simulator(make_config, kind=kind, seed=11), NOON, 600)
    other = run(simulator(make_config, kind=kind, seed=12), NOON, 600)
    assert first == again
    assert first != other


def test_solar_is_dark_at_night_and_bright_at_noon(make_config: ConfigFactory) -> None:
    sim = simulator(make_config, kind="solar", peak_w=5000.0)
    assert {v[0] for v in run(sim, NIGHT, 60)} == {0.0}
    noon = [v[0] for v in run(simulator(make_config, kind="solar", peak_w=5000.0), NOON, 60)]
    assert all(v is not None and 1000 < v <= 5000 * 1.01 for v in noon)


def test_the_energy_counter_integrates_the_power(make_config: ConfigFactory) -> None:
    reads = present(simulator(make_config, kind="household"), T0, 3600, step=5.0)
    assert len(reads) == 720
    powers = [r[0] for r in reads]
    counters = [r[1] for r in reads]
    assert all(p > 150 for p in powers)
    assert counters == sorted(counters)  # monotonic
    expected = sum((a + b) / 2 * 5 / 3600 for a, b in itertools.pairwise(powers))
    assert counters[-1] == pytest.approx(expected)


def test_the_household_runs_appliances_some_time_in_a_day(make_config: ConfigFactory) -> None:
    reads = present(simulator(make_config, kind="household", seed=3), T0, 86400, 60)
    powers = [r[0] for r in reads]
    assert max(powers) > 1500
    assert min(powers) < 300


def test_the_boiler_fan_runs_while_the_water_heats(make_config: ConfigFactory) -> None:
    reads = present(simulator(make_config, kind="boiler", setpoint_c=65.0), T0, 3600, step=10.0)
    assert len(reads) == 360
    fans = [r[2] for r in reads]
    assert set(fans) == {0.0, 1.0}
    assert 0.25 < sum(fans) / len(fans) < 0.42  # 4 of every 12 minutes
    for water, flue, _fan in reads:
        assert 60 <= water <= 68 and flue >= water
        assert water / DS18B20_STEP == int(water / DS18B20_STEP)
    pairs = itertools.pairwise(reads)
    rising = [b[0] - a[0] for a, b in pairs if a[2] == b[2] == 1.0]
    assert sum(rising) > 0


def test_dropouts_are_missing_samples(make_config: ConfigFactory) -> None:
    reads = run(simulator(make_config, kind="boiler", dropout=0.2), T0, 2000)
    dropped = [r for r in reads if r[0] is None]
    assert all(r == [None, None, None] for r in dropped)
    assert 0.15 < len(dropped) / len(reads) < 0.25


def test_a_grid_meter_nets_its_members_between_reads(make_config: ConfigFactory) -> None:
    """Read at the same times as the solar array and households behind it, the grid meter's
    import is what they drew beyond the solar output in each interval, its export the rest."""
    members = [
        {"kind": "solar", "seed": 1, "peak_w": 9000.0},
        {"kind": "household", "seed": 2, "base_w": 220.0},
        {"kind": "household", "seed": 3, "base_w": 160.0},
    ]
    grid = simulator(make_config, kind="grid", seed=9, members=members)
    behind = [simulator(make_config, **member) for member in members]
    # Dawn: generation overtakes consumption, so both directions occur.
    start = int(T0) - 4 * 3600 + 1800
    reads = [
        (grid.read(t), [sim.read(t) for sim in behind]) for t in range(start, start + 7200, 60)
    ]
    directions = set()
    for (before, members_before), (after, members_after) in itertools.pairwise(reads):
        energy = [
            a[1].value - b[1].value for a, b in zip(members_after, members_before, strict=True)
        ]  # type: ignore[operator]
        drawn = sum(energy[1:]) - energy[0]
        imported = after[1].value - before[1].value  # type: ignore[operator]
        exported = after[2].value - before[2].value  # type: ignore[operator]
        assert imported == pytest.approx(max(0.0, drawn), abs=1e-9)
        assert exported == pytest.approx(max(0.0, -drawn), abs=1e-9)
        assert after[0].value == pytest.approx(
            sum(m[0].value for m in members_after[1:]) - members_after[0][0].value  # type: ignore[misc]
        )
        directions.add(drawn > 0)
    assert directions == {True, False}


def test_a_grid_meter_needs_its_members(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError, match="members"):
        simulator(make_config, kind="grid")
    with pytest.raises(ConfigError, match="must be one of solar, household"):
        simulator(make_config, kind="grid", members=[{"kind": "boiler"}])
