"""DS18B20 through w1thermsensor on a fake /sys/bus/w1/devices tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.drivers.ds18b20 import DS18B20, Settings
from edge.errors import ConfigError
from tests.edge.conftest import ConfigFactory
from tests.edge.fakes import ManualClock, W1Tree, ds18b20_crc, w1_slave_text

SERIAL = "0000075a3c2e"


@pytest.fixture
def tree(tmp_path: Path) -> W1Tree:
    """An empty fake w1 bus."""
    return W1Tree(tmp_path / "w1")


def settings(make_config: ConfigFactory, tree: W1Tree, **options: object) -> Settings:
    """The driver settings as the agent parses them from edge.toml."""
    sensor = {
        "driver": "ds18b20",
        "name": "water",
        "sensor_id": f"28-{SERIAL}",
        "w1_base_dir": str(tree.base),
        "retry_delay_s": 0.0,
        **options,
    }
    parsed = make_config(sensors=[sensor]).sensors[0].settings
    assert isinstance(parsed, Settings)
    return parsed


def test_crc_helper_matches_a_real_scratchpad() -> None:
    # A DS18B20 scratchpad captured from a kernel w1_slave file: 72 01 4b 46 7f ff 0e 10 57.
    assert ds18b20_crc(bytes.fromhex("72014b467fff0e10")) == 0x57


def test_reads_the_temperature(
    make_config: ConfigFactory, tree: W1Tree, clock: ManualClock
) -> None:
    tree.set(SERIAL, 21.5625)
    driver = settings(make_config, tree).open(clock)
    [sample] = driver.read(clock.now())
    assert (sample.channel, sample.ts, sample.value) == ("water", clock.now(), 21.5625)
    tree.set(SERIAL, -10.125)
    assert driver.read(clock.now())[0].value == -10.125


def test_offset_is_applied(make_config: ConfigFactory, tree: W1Tree, clock: ManualClock) -> None:
    tree.set(SERIAL, 20.0)
    driver = settings(make_config, tree, offset_c=-0.5).open(clock)
    assert driver.read(clock.now())[0].value == 19.5


def test_a_crc_failure_is_retried(make_config: ConfigFactory, tree: W1Tree) -> None:
    tree.set(SERIAL, 60.0, crc_ok=False)
    sleeps: list[float] = []

    def next_conversion(seconds: float) -> None:
        sleeps.append(seconds)
        tree.set(SERIAL, 60.25)  # the retry reads a fresh, good conversion

    driver = DS18B20(settings(make_config, tree, retry_delay_s=0.2), sleep=next_conversion)
    assert driver.read(0.0)[0].value == 60.25
    assert sleeps == [0.2]


def test_persistent_crc_failures_give_a_missing_sample(
    make_config: ConfigFactory, tree: W1Tree
) -> None:
    tree.set(SERIAL, 60.0, crc_ok=False)
    sleeps: list[float] = []
    driver = DS18B20(settings(make_config, tree, retries=4), sleep=sleeps.append)
    [sample] = driver.read(0.0)
    assert sample.value is None  # never 0, never -1
    assert len(sleeps) == 3


def test_the_power_on_value_is_a_missing_sample(make_config: ConfigFactory, tree: W1Tree) -> None:
    tree.set(SERIAL, 85.0)
    driver = DS18B20(settings(make_config, tree), sleep=lambda s: None)
    assert driver.read(0.0)[0].value is None


def test_an_all_zero_scratchpad_is_a_missing_sample(
    make_config: ConfigFactory, tree: W1Tree
) -> None:
    tree.raw(SERIAL, "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n")
    driver = DS18B20(settings(make_config, tree), sleep=lambda s: None)
    assert driver.read(0.0)[0].value is None


def test_unplugged_is_missing_without_retries_and_replugging_recovers(
    make_config: ConfigFactory, tree: W1Tree
) -> None:
    sleeps: list[float] = []
    driver = DS18B20(settings(make_config, tree), sleep=sleeps.append)
    assert driver.read(0.0)[0].value is None  # never plugged in
    tree.set(SERIAL, 45.5)
    assert driver.read(1.0)[0].value == 45.5
    tree.unplug(SERIAL)
    assert driver.read(2.0)[0].value is None
    assert sleeps == []
    tree.raw(SERIAL, w1_slave_text(46.0))
    assert driver.read(3.0)[0].value == 46.0


def test_a_bad_sensor_id_is_a_config_error(make_config: ConfigFactory, tree: W1Tree) -> None:
    with pytest.raises(ConfigError, match=r"sensor 'water': 'sensor_id' must match"):
        settings(make_config, tree, sensor_id="10-123")
