"""The transport interface: offer outbox items to the gateway, get per-seq answers back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Status = Literal["accepted", "duplicate", "rejected"]
STATUSES: tuple[Status, ...] = ("accepted", "duplicate", "rejected")


@dataclass(frozen=True)
class OutboxItem:
    """One signed, stored submission: its seq, contract and the exact JSON bytes to send."""

    seq: int
    contract: str
    start_ms: int
    body: bytes


@dataclass(frozen=True)
class Result:
    """The gateway's answer for one seq."""

    seq: int
    status: Status
    log_tag_id: str | None = None
    error: str | None = None
    # A conflict's rule ("seq" or "minute") and where the device stands in the ledger: its
    # highest recorded seq and latest recorded minute (docs/edge-recovery.md).
    rule: str | None = None
    last_seq: int | None = None
    last_start: str | None = None

    @property
    def delivered(self) -> bool:
        """Accepted now or before: the outbox may let it go."""
        return self.status in ("accepted", "duplicate")


def result_from(seq: int, answer: Mapping[str, Any]) -> Result | None:
    """A Result from a gateway result object (or conflict problem), or None when it is not one."""
    status = answer.get("status")
    tag = answer.get("log_tag_id")
    error = answer.get("error")
    if status not in STATUSES or not (tag is None or isinstance(tag, str)):
        return None
    return Result(seq, status, tag, error if isinstance(error, str) else None, **standing(answer))


def standing(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A conflict answer's rule, last_seq and last_start, those of the right type."""
    rule, last_seq, last_start = (answer.get(k) for k in ("rule", "last_seq", "last_start"))
    return {
        "rule": rule if isinstance(rule, str) else None,
        "last_seq": last_seq if type(last_seq) is int else None,
        "last_start": last_start if isinstance(last_start, str) else None,
    }


class Transport(Protocol):
    """Delivers outbox items of one contract."""

    contract: str
    batch_size: int
    # True: `exchange` answers every item it was given (HTTP). False: answers arrive
    # later and `exchange` returns those received so far (MQTT acks).
    synchronous: bool

    def exchange(self, items: Sequence[OutboxItem], now: float) -> list[Result]:
        """Offer the oldest pending items; return the answers known now.

        Raises DeliveryError for a transient failure (with any answers already obtained).
        """
        ...

    def resumed(self) -> bool:
        """True once after a lost connection came back: the remaining backoff is moot."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
