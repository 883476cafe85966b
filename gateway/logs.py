"""The gateway's logging: one line per record, text or JSON, and one line per delivery."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
# Its own logger, so an operator can silence deliveries alone (level WARNING) and keep the rest.
deliveries = logging.getLogger("patio.deliveries")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from `extra=` and is logged.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339 UTC), level, logger, message, the extras.

    Hand-written on orjson: at one line per envelope, python-json-logger's formatter cost
    60 us an envelope here, more than the gateway's whole budget for one.
    """

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS:
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn and the gateway: every logger to stderr in one format."""
    if log_format == "json":
        formatter: dict[str, Any] = {"()": JsonFormatter}
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
