"""The gateway's logging: one line per record, text or JSON, and one line per delivery."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

LOG_FORMATS = ("text", "json")
# Its own logger, so an operator can silence deliveries alone (level WARNING) and keep the rest.
deliveries = logging.getLogger("patio.deliveries")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn and the gateway: every logger to stderr in one format."""
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "patio", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"patio": formatter},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's loggers propagate to the root's handler instead of keeping their own.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def _identity(envelope: Any) -> tuple[Any, Any]:
    """The device and seq an envelope claims, if it is well-formed enough to say."""
    payload = envelope.get("payload") if isinstance(envelope, Mapping) else None
    if not isinstance(payload, Mapping):
        return None, None
    return payload.get("device_id"), payload.get("seq")


def log_deliveries(
    contract: str, envelopes: Sequence[Any], results: Sequence[Mapping[str, Any]]
) -> None:
    """One info line per envelope: accepted, duplicate, conflict or rejected, and why."""
    if not deliveries.isEnabledFor(logging.INFO):
        return
    for envelope, result in zip(envelopes, results, strict=True):
        device, seq = _identity(envelope)
        status = result["status"]
        if status == "rejected" and result["code"] == 409:
            status = "conflict"
        deliveries.info(
            "submission %s: %s device=%s seq=%s code=%s log_tag_id=%s",
            status,
            contract,
            device,
            seq,
            result["code"],
            result["log_tag_id"],
            extra={
                "event": "submission",
                "status": status,
                "contract": contract,
                "device": device,
                "seq": seq,
                "code": result["code"],
                "log_tag_id": result["log_tag_id"],
                "error": result["error"],
            },
        )
