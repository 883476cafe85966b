"""Gateway settings, read once from the environment."""

from __future__ import annotations

import gc
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from gateway.logs import LOG_FORMATS

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, not {text!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    text = (os.environ.get(name) or default).lower()
    if text not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {text!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the gateway needs; the embedded defaults need nothing set."""

    data_dir: Path = Path("var")
    database_url: str | None = None
    origin: str | None = None
    seal_interval: float = 5.0
    seal_entries: int = 10_000
    mqtt_url: str | None = None
    mqtt_client_id: str = "patio-gateway"
    mqtt_group: str = "patio"
    max_body_bytes: int = 1 << 20
    retention_interval: float = 3600.0  # seconds between runs of the retention policies
    log_format: str = "text"
    log_level: str = "info"

    @classmethod
    def from_env(cls) -> Settings:
        """PATIO_DATA_DIR, PATIO_DATABASE_URL, PATIO_LOG_ORIGIN, PATIO_SEAL_INTERVAL,
        PATIO_SEAL_ENTRIES, PATIO_MQTT_URL, PATIO_MQTT_CLIENT_ID, PATIO_MQTT_GROUP,
        PATIO_MAX_BODY_BYTES, PATIO_LOG_FORMAT, PATIO_LOG_LEVEL, PATIO_RETENTION_INTERVAL
        (docs/configuration.md)."""
        return cls(
            data_dir=Path(os.environ.get("PATIO_DATA_DIR") or "var"),
            database_url=os.environ.get("PATIO_DATABASE_URL") or None,
            origin=os.environ.get("PATIO_LOG_ORIGIN") or None,
            seal_interval=_number("PATIO_SEAL_INTERVAL", 5.0),
            seal_entries=int(_number("PATIO_SEAL_ENTRIES", 10_000)),
            mqtt_url=os.environ.get("PATIO_MQTT_URL") or None,
            retention_interval=_number("PATIO_RETENTION_INTERVAL", 3600.0),
            max_body_bytes=int(_number("PATIO_MAX_BODY_BYTES", 1 << 20)),
            log_format=_choice("PATIO_LOG_FORMAT", LOG_FORMATS, "text"),
            log_level=_choice("PATIO_LOG_LEVEL", LOG_LEVELS, "info"),
            # One persistent session per gateway: the id must differ between gateways
            # and stay the same across a gateway's restarts (a container's host name).
            mqtt_client_id=os.environ.get("PATIO_MQTT_CLIENT_ID")
            or f"patio-gateway-{socket.gethostname()}",
            mqtt_group=os.environ.get("PATIO_MQTT_GROUP") or "patio",
        )


# A collection once this many more containers were made than freed, not CPython's 700: a batch
# of 100 envelopes holds some 3,000 dicts until it is answered, so at 700 the collector walked
# every batch's objects several times over, 6-7% of each gateway process's CPU.
GC_THRESHOLDS = (50_000, 10, 10)


def settle_heap() -> None:
    """Once a gateway process is built: freeze what exists (~100,000 objects in the HTTP
    process, whose every full collection stalled requests for 70 ms at 1,000 submissions/s),
    so collections only walk what requests create, and collect less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
