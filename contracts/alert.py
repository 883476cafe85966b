"""`alert`: a notification the gateway sent, on the log, signed by the gateway's registry key.

An HOA proves with it that an alert was reported, when, on which channel and to whom: the
entry is as verifiable as a reading (`patio verify` of its bundle, device key = the
registry key, `GET /v1/registry-key`). The entries form their own (device_id, seq) stream.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from ledger.keys import NamedKey
from ledger.log import Submission

ALERT_DEVICE = "_alerts"  # the (device_id, seq) stream of alert entries


class AlertRecord(NamedTuple):
    """A sent notification to record (a writer request)."""

    community_id: str
    channel: str  # email, webhook, ntfy
    recipient: str
    sent_at: str  # RFC 3339 UTC
    alerts: tuple[dict[str, Any], ...]  # each: rule_id, rule, subject, state, minute, late


class AlertContract:
    """Builds the signed alert entries the writer appends."""

    name: ClassVar[str] = "alert"
    version: ClassVar[int] = 1

    @property
    def tag(self) -> str:
        """`alert@1`."""
        return f"{self.name}@{self.version}"

    def submission(self, *, signer: NamedKey, seq: int, record: AlertRecord) -> Submission:
        """An alert entry signed by `signer` (the gateway's registry key)."""
        payload = {
            "device_id": ALERT_DEVICE,
            "seq": seq,
            "community_id": record.community_id,
            "channel": record.channel,
            "recipient": record.recipient,
            "sent_at": record.sent_at,
            "alerts": list(record.alerts),
        }
        return Submission(
            contract=self.tag,
            payload=payload,
            sig=signer.sign_payload(payload),
            device_id=ALERT_DEVICE,
            seq=seq,
        )
