"""ADS1115 + SCT-013 clamp on a fake SMBus that behaves as the datasheet says."""

from __future__ import annotations

import pytest

from edge.drivers.ads1115 import ADS1115Clamp, Settings, config_word, rms_current
from edge.errors import ConfigError
from tests.edge.conftest import ConfigFactory
from tests.edge.fakes import ADS1115Config, FakeADS1115Bus, Signal, clamp_signal

# A burst of 172 samples at 860 SPS is ten 50 Hz cycles: the RMS of whole cycles.
BURST = 172


def settings(make_config: ConfigFactory, **options: object) -> Settings:
    """The clamp's settings as parsed from edge.toml."""
    sensor = {"driver": "ads1115", "name": "fan", "burst": BURST, **options}
    parsed = make_config(sensors=[sensor]).sensors[0].settings
    assert isinstance(parsed, Settings)
    return parsed


def clamp(parsed: Settings, bus: FakeADS1115Bus) -> ADS1115Clamp:
    """The driver on the fake bus, on the bus's own time."""
    return ADS1115Clamp(parsed, bus_factory=lambda number: bus, sleep=bus.sleep)


def constant(volts: float) -> Signal:
    """A pin held at a DC voltage."""
    return lambda t: volts


def test_config_word_matches_the_datasheet() -> None:
    # AIN0-AIN1, ±2.048 V, continuous, 860 SPS, comparator off: 0b0_000_010_0_111_00011.
    assert config_word(mux="a0-a1", full_scale_v=2.048, data_rate=860) == 0x04E3
    # AIN0 single-ended, ±4.096 V, continuous, 128 SPS (the chip's reset rate).
    assert config_word(mux="a0", full_scale_v=4.096, data_rate=128) == 0x4283


def test_the_fake_bus_follows_the_datasheet() -> None:
    # The reset value 0x8583: not converting, AIN0-AIN1, ±2.048 V, single-shot, 128 SPS,
    # traditional active-low non-latching comparator, disabled.
    assert ADS1115Config.decode(0x8583) == ADS1115Config(
        os=1, mux=0, pga=2, mode=1, dr=4, comp_mode=0, comp_pol=0, comp_lat=0, comp_que=3
    )
    bus = FakeADS1115Bus({"AIN0": constant(3.0), "AIN1": constant(1.0), "AIN2": constant(0.5)})
    assert bus.read_i2c_block_data(0x48, 0x01, 2) == [0x85, 0x83]
    assert bus.read_i2c_block_data(0x48, 0x00, 2) == [0x00, 0x00]  # nothing converted yet
    assert bus.read_i2c_block_data(0x48, 0x02, 2) == [0x80, 0x00]  # Lo_thresh
    assert bus.read_i2c_block_data(0x48, 0x03, 2) == [0x7F, 0xFF]  # Hi_thresh
    # Single-shot, AIN2 against GND, ±4.096 V, 8 SPS: OS reads 0 until the conversion is done.
    bus.write_i2c_block_data(0x48, 0x01, [0b1_110_001_1, 0b000_00011])
    assert bus.read_i2c_block_data(0x48, 0x01, 2)[0] >> 7 == 0
    bus.sleep(1 / 8)
    assert bus.read_i2c_block_data(0x48, 0x01, 2)[0] >> 7 == 1
    assert bus.read_i2c_block_data(0x48, 0x00, 2) == [0x0F, 0xA0]  # 0.5 V = 4000 LSB of 125 uV
    # Continuous, AIN0-AIN1 = +2 V at ±1.024 V, 860 SPS: over the range, clipped.
    bus.write_i2c_block_data(0x48, 0x01, [0b0_000_011_0, 0b111_00011])
    bus.sleep(1 / 860)
    assert bus.read_i2c_block_data(0x48, 0x00, 2) == [0x7F, 0xFF]
    bus.write_i2c_block_data(0x48, 0x01, [0b0_010_000_0, 0b111_00011])  # AIN1-AIN3 = +1 V
    assert bus.read_i2c_block_data(0x48, 0x00, 2) == [0x7F, 0xFF]  # held until a new one
    bus.sleep(1 / 860)
    assert bus.read_i2c_block_data(0x48, 0x00, 2) == [0x14, 0xD5]  # 1 V at ±6.144 V: 5333
    bus.pins["AIN3"] = constant(2.0)  # AIN1-AIN3 = -1 V: two's complement
    bus.sleep(1 / 860)
    assert bus.read_i2c_block_data(0x48, 0x00, 2) == [0xEB, 0x2B]  # -5333
    with pytest.raises(AssertionError, match="read-only"):
        bus.write_i2c_block_data(0x48, 0x00, [0, 0])


def test_rms_of_a_pure_sine_ignores_the_dc_bias() -> None:
    signal = clamp_signal(10.0, bias_v=0.6)
    counts = [round(signal(k / 860) / 2.048 * 32768) for k in range(BURST)]
    assert rms_current(counts, full_scale_v=2.048, amps_per_volt=30.0) == pytest.approx(
        10.0, rel=0.005
    )


def test_a_burst_gives_apparent_power_and_the_motor_state(make_config: ConfigFactory) -> None:
    # A fan motor drawing 0.8 A with a strong 3rd harmonic, through the clamp on AIN0-AIN1.
    fan_on = clamp_signal(0.8, bias_v=1.0, third_harmonic=0.3)
    bus = FakeADS1115Bus({"AIN0": fan_on, "AIN1": constant(1.0)}, noise_counts=2)
    parsed = settings(make_config, mains_voltage=230.0, calibration=1.02, on_threshold_va=50.0)
    va, state = clamp(parsed, bus).read(100.0)
    assert bus.writes[0] == (0x01, [0x04, 0xE3])  # configured before sampling
    assert bus.config.comp_que == 0b11 and bus.config.mode == 0  # no comparator, continuous
    assert va.channel == "fan_va" and va.ts == 100.0
    assert va.value == pytest.approx(230 * 0.8 * 1.02, rel=0.01)
    assert (state.channel, state.value) == ("fan_on", 1.0)


def test_noise_alone_is_off(make_config: ConfigFactory) -> None:
    bus = FakeADS1115Bus({}, noise_counts=3)  # clamp on an idle cable
    parsed = settings(make_config, on_threshold_va=50.0)
    va, state = clamp(parsed, bus).read(0.0)
    assert va.value is not None and va.value < 5.0
    assert state.value == 0.0


# One clamp per pin, each measuring its own current, all biased to mid-rail, in phase: a
# differential input reads the difference of two currents. Every input reads a different one.
PIN_AMPS = {"AIN0": 12.0, "AIN1": 3.0, "AIN2": 7.0, "AIN3": 1.0}
INPUTS = {  # the driver's input names, as edge/README.md documents them
    "a0-a1": ("AIN0", "AIN1"), "a0-a3": ("AIN0", "AIN3"), "a1-a3": ("AIN1", "AIN3"),
    "a2-a3": ("AIN2", "AIN3"), "a0": ("AIN0", None), "a1": ("AIN1", None),
    "a2": ("AIN2", None), "a3": ("AIN3", None),
}  # fmt: skip


@pytest.mark.parametrize("name", INPUTS)
def test_the_configured_input_is_the_one_sampled(make_config: ConfigFactory, name: str) -> None:
    bus = FakeADS1115Bus({pin: clamp_signal(a, bias_v=1.65) for pin, a in PIN_AMPS.items()})
    positive, negative = INPUTS[name]
    amps = PIN_AMPS[positive] - (PIN_AMPS[negative] if negative else 0.0)
    [va] = clamp(settings(make_config, input=name, full_scale_v=4.096), bus).read(0.0)
    assert bus.config.pins == INPUTS[name]
    assert va.value == pytest.approx(230 * amps, rel=0.01)


@pytest.mark.parametrize("full_scale_v", [6.144, 4.096, 2.048, 1.024, 0.512, 0.256])
def test_the_configured_range_scales_the_counts(
    make_config: ConfigFactory, full_scale_v: float
) -> None:
    # 4 A through the clamp: 0.19 V peak, inside every range.
    bus = FakeADS1115Bus({"AIN0": clamp_signal(4.0, bias_v=1.0), "AIN1": constant(1.0)})
    [va] = clamp(settings(make_config, full_scale_v=full_scale_v), bus).read(0.0)
    assert bus.config.full_scale_v == full_scale_v
    assert va.value == pytest.approx(230 * 4.0, rel=0.01)


@pytest.mark.parametrize("rate", [8, 16, 32, 64, 128, 250, 475, 860])
def test_a_burst_reads_each_conversion_once(make_config: ConfigFactory, rate: int) -> None:
    bus = FakeADS1115Bus({"AIN0": clamp_signal(2.0, bias_v=1.0), "AIN1": constant(1.0)})
    clamp(settings(make_config, data_rate=rate, burst=16), bus).read(0.0)
    assert bus.config.rate == rate
    # None would be the value from before the config write; a repeat, a rate mismatch.
    first = bus.sampled[0]
    assert first is not None and bus.sampled == list(range(first, first + 16))


def test_an_adc_that_does_not_answer_gives_missing_samples(make_config: ConfigFactory) -> None:
    bus = FakeADS1115Bus({"AIN0": clamp_signal(2.0, bias_v=1.0), "AIN1": constant(1.0)})
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
