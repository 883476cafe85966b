"""The agent's TOML configuration: parsing and validation into typed settings."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.drivers import SensorSpec

# DESIGN.md pinned format 3: the device id pattern.
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Sensor names become reading keys and Patio sensor ids: keep them as tame as device ids.
SENSOR_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")
# MQTT topic levels must not hold wildcards or separators.
TOPIC_LEVEL = re.compile(r"^[^/#+\s]{1,64}$")
# The gateway accepts up to this many envelopes per POST /v1/entries.
MAX_BATCH = 1000

Transport = Literal["http", "mqtt", "legacy"]


class _Missing:
    """Marks a required key."""


REQUIRED: Final = _Missing()


class Section:
    """One TOML table, read key by key with one-line errors naming the table and key."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self._table = dict(table)
        self._where = where
        self._read: set[str] = set()

    @property
    def where(self) -> str:
        """The table's name in error messages."""
        return self._where

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError about `key`."""
        return ConfigError(f"{self._where}: {key!r} {message}")

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._table.get(key)

    def text(
        self,
        key: str,
        default: str | _Missing = REQUIRED,
        *,
        pattern: re.Pattern[str] | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> str:
        """A string value."""
        value = self._get(key)
        if value is None:
            if isinstance(default, _Missing):
                raise self.error(key, "is required")
            return default
        if not isinstance(value, str):
            raise self.error(key, "must be a string")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, not {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.error(key, f"must match {pattern.pattern}, not {value!r}")
        return value

    def optional_text(self, key: str, *, pattern: re.Pattern[str] | None = None) -> str | None:
        """A string value or None when absent."""
        if self._table.get(key) is None:
            self._read.add(key)
            return None
        return self.text(key, pattern=pattern)

    def number(
        self,
        key: str,
        default: float | _Missing = REQUIRED,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A finite number within bounds."""
        value = self._get(key)
        if value is None:
            if isinstance(default, _Missing):
                raise self.error(key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise self.error(key, "must be finite")
        if minimum is not None and number < minimum:
            raise self.error(key, f"must be at least {minimum:g}")
        if above is not None and number <= above:
            raise self.error(key, f"must be greater than {above:g}")
        if maximum is not None and number > maximum:
            raise self.error(key, f"must be at most {maximum:g}")
        return number

    def optional_number(
        self, key: str, *, minimum: float | None = None, above: float | None = None
    ) -> float | None:
        """A number or None when absent."""
        if self._table.get(key) is None:
            self._read.add(key)
            return None
        return self.number(key, minimum=minimum, above=above)

    def integer(
        self, key: str, default: int | _Missing = REQUIRED, *, minimum: int, maximum: int
    ) -> int:
        """An integer within bounds."""
        value = self._get(key)
        if value is None:
            if isinstance(default, _Missing):
                raise self.error(key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if not minimum <= value <= maximum:
            raise self.error(key, f"must be from {minimum} to {maximum}, not {value}")
        return value

    def moment(self, key: str) -> float | None:
        """An optional RFC 3339 time (TOML datetime or string), as seconds since the epoch."""
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, str):
            from ledger.encoding import parse_rfc3339
            from ledger.errors import FormatError

            try:
                return parse_rfc3339(value, what=key).timestamp()
            except FormatError as exc:
                raise self.error(key, "must be an RFC 3339 time like 2026-01-01T00:00:00Z") from exc
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.timestamp()
        raise self.error(key, "must be an RFC 3339 time with an offset, like 2026-01-01T00:00:00Z")

    def flag(self, key: str, default: bool) -> bool:
        """A boolean value."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def path(self, key: str, default: str | _Missing, *, base: Path) -> Path:
        """A path; relative paths are taken from the configuration file's folder."""
        return base / Path(self.text(key, default)).expanduser()

    def table(self, key: str) -> Section:
        """A sub-table (empty when absent)."""
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return Section(value, f"[{key}]")

    def tables(self, key: str) -> list[dict[str, Any]]:
        """An array of tables (`[[key]]`)."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.error(key, "must be an array of tables ([[...]])")
        return value

    def finish(self) -> None:
        """Reject keys nobody read: a typo must not silently fall back to a default."""
        unknown = sorted(set(self._table) - self._read)
        if unknown:
            raise ConfigError(f"{self._where}: unknown key {unknown[0]!r}")


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """[agent]: retention, aggregation grace and the simulated clock."""

    raw_retention_s: float = 48 * 3600.0
    acked_retention_s: float = 7 * 86400.0
    grace_s: float = 5.0
    time_scale: float = 1.0
    sim_start: float | None = None


@dataclass(frozen=True, kw_only=True)
class DeliverySettings:
    """[delivery]: where and how aggregates go, and the retry policy."""

    transport: Transport
    url: str | None
    batch_size: int = 500
    timeout_s: float = 10.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    flush_budget_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """[mqtt]: the broker for the MQTT transport and the default one for Tasmota plugs."""

    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 30
    ack_timeout_s: float = 30.0
    window: int = 100
    client_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """The whole configuration of one device's agent."""

    path: Path
    device_id: str
    community: str
    key_file: Path
    data_dir: Path
    agent: AgentSettings
    delivery: DeliverySettings
    mqtt: MqttSettings
    sensors: tuple[SensorSpec, ...]

    @property
    def database(self) -> Path:
        """The agent's one SQLite file: raw samples, outbox, dead letters, state."""
        return self.data_dir / "edge.db"


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a configuration file; ConfigError says what is wrong, in one line."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(document, path=path)


def parse_config(document: Mapping[str, Any], *, path: Path) -> EdgeConfig:
    """Validate a parsed TOML document."""
    from edge.drivers import parse_sensor

    base = path.parent
    top = Section(document, str(path.name))
    device_id = top.text("device_id", pattern=DEVICE_ID)
    community = top.text("community", pattern=TOPIC_LEVEL)
    key_file = top.path("key_file", REQUIRED, base=base)
    data_dir = top.path("data_dir", "var/edge", base=base)

    section = top.table("agent")
    agent = AgentSettings(
        raw_retention_s=section.number("raw_retention_h", 48.0, above=0) * 3600,
        acked_retention_s=section.number("acked_retention_h", 168.0, minimum=0) * 3600,
        grace_s=section.number("grace_s", 5.0, minimum=0, maximum=50),
        time_scale=section.number("time_scale", 1.0, above=0, maximum=100_000),
        sim_start=section.moment("sim_start"),
    )
    section.finish()

    section = top.table("delivery")
    transport = section.text("transport", "http", choices=("http", "mqtt", "legacy"))
    url = section.optional_text("url", pattern=re.compile(r"^https?://\S+$"))
    if transport != "mqtt" and url is None:
        raise section.error("url", f"is required for the {transport} transport")
    delivery = DeliverySettings(
        transport=transport,  # type: ignore[arg-type]  # checked by choices
        url=url.rstrip("/") if url else None,
        batch_size=section.integer("batch_size", 500, minimum=1, maximum=MAX_BATCH),
        timeout_s=section.number("timeout_s", 10.0, above=0),
        backoff_base_s=section.number("backoff_base_s", 2.0, above=0),
        backoff_max_s=section.number("backoff_max_s", 300.0, above=0),
        flush_budget_s=section.number("flush_budget_s", 2.0, above=0),
    )
    if delivery.backoff_max_s < delivery.backoff_base_s:
        raise section.error("backoff_max_s", "must be at least backoff_base_s")
    section.finish()

    section = top.table("mqtt")
    mqtt = MqttSettings(
        host=section.text("host", "127.0.0.1"),
        port=section.integer("port", 1883, minimum=1, maximum=65535),
        keepalive_s=section.integer("keepalive_s", 30, minimum=5, maximum=3600),
        ack_timeout_s=section.number("ack_timeout_s", 30.0, above=0),
        window=section.integer("window", 100, minimum=1, maximum=10_000),
        client_id=section.optional_text("client_id"),
    )
    section.finish()

    sensors = []
    channels: set[str] = set()
    for index, table in enumerate(top.tables("sensor")):
        spec = parse_sensor(table, index=index, mqtt=mqtt, base=base)
        for channel in spec.channels:
            if channel.name in channels:
                raise ConfigError(f"sensor {spec.name!r}: reading {channel.name!r} is duplicated")
            channels.add(channel.name)
        sensors.append(spec)
    if not sensors:
        raise ConfigError(f"{path.name}: at least one [[sensor]] is required")
    top.finish()

    if agent.time_scale != 1.0 or agent.sim_start is not None:
        real = [spec.name for spec in sensors if spec.driver != "simulator"]
        if real:
            raise ConfigError(
                f"[agent]: time_scale and sim_start need simulator sensors only; "
                f"sensor {real[0]!r} reads real hardware"
            )
    return EdgeConfig(
        path=path,
        device_id=device_id,
        community=community,
        key_file=key_file,
        data_dir=data_dir,
        agent=agent,
        delivery=delivery,
        mqtt=mqtt,
        sensors=tuple(sensors),
    )
