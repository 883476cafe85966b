"""Fixtures for the edge tests: a device key, config files, a fake gateway, a private broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig, load_config
from ledger.keys import NamedKey
from tests.edge.fakes import Broker, FakeGateway, ManualClock, toml_text

DEVICE = "dev-1"
COMMUNITY = "hoa-1"
# A Sunday morning: the simulator's sun is up.
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()

ConfigFactory = Callable[..., EdgeConfig]


@pytest.fixture
def device_key(tmp_path: Path) -> NamedKey:
    """The device key, saved as dev.key (0600) next to the config."""
    key = NamedKey.generate(DEVICE)
    key.save(tmp_path / "dev.key")
    return key


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at T0."""
    return ManualClock(T0)


@pytest.fixture
def write_config(tmp_path: Path, device_key: NamedKey) -> Callable[..., Path]:
    """Write an edge.toml from keyword sections; returns its path."""

    def write(
        *,
        sensors: list[dict[str, Any]] | None = None,
        name: str = "edge.toml",
        **sections: Any,
    ) -> Path:
        document: dict[str, Any] = {
            "device_id": DEVICE,
            "community": COMMUNITY,
            "key_file": "dev.key",
            "data_dir": "var",
        }
        document.update({k: v for k, v in sections.items() if not isinstance(v, dict)})
        document.update({k: v for k, v in sections.items() if isinstance(v, dict)})
        document.setdefault("delivery", {"url": "http://127.0.0.1:9"})
        document["sensor"] = sensors or [{"driver": "simulator", "name": "pv", "kind": "solar"}]
        path = tmp_path / name
        path.write_text(toml_text(document))
        return path

    return write


@pytest.fixture
def make_config(write_config: Callable[..., Path]) -> ConfigFactory:
    """Write and load an edge.toml."""

    def make(**kwargs: Any) -> EdgeConfig:
        return load_config(write_config(**kwargs))

    return make


@pytest.fixture
def gateway(device_key: NamedKey) -> Iterator[FakeGateway]:
    """The in-memory gateway with the device registered."""
    with FakeGateway(keys={DEVICE: device_key.public_key_b64}).serve() as fake:
        yield fake


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto started from docker/mosquitto.conf."""
    Broker.require()
    instance = Broker(tmp_path / "mosquitto")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
