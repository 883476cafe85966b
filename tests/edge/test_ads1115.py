"""ADS1115 + SCT-013 clamp on a fake SMBus that replays recorded waveforms."""

from __future__ import annotations

import pytest

from edge.drivers.ads1115 import ADS1115Clamp, Settings, config_word, rms_current
from edge.errors import ConfigError
from tests.edge.conftest import ConfigFactory
from tests.edge.fakes import FakeADS1115Bus, clamp_waveform

# A burst of 172 samples at 860 SPS is ten 50 Hz cycles: the RMS of whole cycles.
BURST = 172


def settings(make_config: ConfigFactory, **options: object) -> Settings:
    """The clamp's settings as parsed from edge.toml."""
    sensor = {"driver": "ads1115", "name": "fan", "burst": BURST, **options}
    parsed = make_config(sensors=[sensor]).sensors[0].settings
    assert isinstance(parsed, Settings)
    return parsed


def clamp(parsed: Settings, bus: FakeADS1115Bus) -> ADS1115Clamp:
    """The driver on the fake bus, without real sleeps."""
    return ADS1115Clamp(parsed, bus_factory=lambda number: bus, sleep=lambda s: None)


def test_config_word_matches_the_datasheet() -> None:
    # AIN0-AIN1, ±2.048 V, continuous, 860 SPS, comparator off: 0b0_000_010_0_111_00011.
    assert config_word(mux="a0-a1", full_scale_v=2.048, data_rate=860) == 0x04E3
    # AIN0 single-ended, ±4.096 V, continuous, 128 SPS (the chip's reset rate).
    assert config_word(mux="a0", full_scale_v=4.096, data_rate=128) == 0x4283


def test_rms_of_a_pure_sine_ignores_the_dc_bias() -> None:
    counts = clamp_waveform(10.0, samples=BURST, bias_v=0.6)
    assert rms_current(counts, full_scale_v=2.048, amps_per_volt=30.0) == pytest.approx(
        10.0, rel=0.005
    )


def test_a_burst_gives_apparent_power_and_the_motor_state(make_config: ConfigFactory) -> None:
    # A fan motor drawing 0.8 A with a strong 3rd harmonic, as recorded through the clamp.
    fan_on = clamp_waveform(0.8, samples=BURST, third_harmonic=0.3, noise_counts=2)
    bus = FakeADS1115Bus({"a0-a1": fan_on})
    parsed = settings(make_config, mains_voltage=230.0, calibration=1.02, on_threshold_va=50.0)
    va, state = clamp(parsed, bus).read(100.0)
    assert bus.writes[0] == (0x01, [0x04, 0xE3])  # configured before sampling
    assert va.channel == "fan_va" and va.ts == 100.0
    assert va.value == pytest.approx(230 * 0.8 * 1.02, rel=0.01)
    assert (state.channel, state.value) == ("fan_on", 1.0)


def test_noise_alone_is_off(make_config: ConfigFactory) -> None:
    idle = clamp_waveform(0.0, samples=BURST, noise_counts=3)  # clamp on an idle cable
    parsed = settings(make_config, on_threshold_va=50.0)
    va, state = clamp(parsed, FakeADS1115Bus({"a0-a1": idle})).read(0.0)
    assert va.value is not None and va.value < 5.0
    assert state.value == 0.0


def test_the_configured_input_is_the_one_sampled(make_config: ConfigFactory) -> None:
    bus = FakeADS1115Bus(
        {
            "a2": clamp_waveform(5.0, samples=BURST, bias_v=1.65, full_scale_v=4.096),
            "a0-a1": [0] * BURST,
        }
    )
    parsed = settings(make_config, input="a2", full_scale_v=4.096)
    [va] = clamp(parsed, bus).read(0.0)  # no threshold: no state channel
    assert va.value == pytest.approx(230 * 5.0, rel=0.01)


def test_an_adc_that_does_not_answer_gives_missing_samples(make_config: ConfigFactory) -> None:
    bus = FakeADS1115Bus({"a0-a1": clamp_waveform(2.0, samples=BURST)})
    driver = clamp(settings(make_config, on_threshold_va=50.0), bus)
    bus.fail = True
    assert [s.value for s in driver.read(0.0)] == [None, None]
    assert bus.closed  # the bus is reopened on the next read
    bus.fail = False
    va, state = driver.read(1.0)
    assert va.value == pytest.approx(460.0, rel=0.01) and state.value == 1.0


def test_a_missing_i2c_device_node_gives_missing_samples(make_config: ConfigFactory) -> None:
    def no_bus(number: int) -> FakeADS1115Bus:
        raise FileNotFoundError(2, f"No such file or directory: '/dev/i2c-{number}'")

    driver = ADS1115Clamp(settings(make_config), bus_factory=no_bus, sleep=lambda s: None)
    assert [s.value for s in driver.read(0.0)] == [None]


def test_an_unsupported_gain_is_a_config_error(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError, match=r"sensor 'fan': 'full_scale_v' must be one of"):
        settings(make_config, full_scale_v=3.3)
