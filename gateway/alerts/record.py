"""Appending a sent notification to the log (run by the writer, like a registry change)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from contracts.alert import ALERT_DEVICE, AlertContract, AlertRecord
from gateway.submissions import Verdict
from ledger.errors import ConflictError
from ledger.keys import NamedKey
from ledger.log import Appended, Log
from ledger.storage import DriverCursor

ALERT = AlertContract()
ATTEMPTS = 50  # each failed attempt means another process recorded an alert meanwhile
log = logging.getLogger(__name__)


class SeqTaken(Exception):
    """Another gateway process took this alert seq: plan again."""


def record_alert(record: AlertRecord, *, log_: Log, signer: NamedKey) -> Verdict:
    """Append one `alert@1` entry with the next seq of the alert stream."""
    for _ in range(ATTEMPTS):
        try:
            return _append(record, log_=log_, signer=signer)
        except SeqTaken:
            continue
    result = {
        "status": "rejected",
        "log_tag_id": None,
        "code": 503,
        "error": "alerts are being recorded concurrently; retry",
    }
    return Verdict(result=result, contract=ALERT.tag, title="Busy")


def _append(record: AlertRecord, *, log_: Log, signer: NamedKey) -> Verdict:
    with log_.engine.connect() as conn:
        seq = 1 + DriverCursor(conn).scalar(
            "SELECT coalesce(max(seq), 0) FROM entries WHERE device_id = ?", (ALERT_DEVICE,)
        )
    submission = ALERT.submission(signer=signer, seq=seq, record=record)

    def within(_conn: Connection, _: Any, outcomes: list[Appended | ConflictError]) -> None:
        [outcome] = outcomes
        if not (isinstance(outcome, Appended) and outcome.status == "accepted"):
            raise SeqTaken(f"alert seq {seq} was taken concurrently")  # rolls back the evidence

    [outcome] = log_.append([submission], within=within)
    assert isinstance(outcome, Appended)
    result = {
        "status": "accepted",
        "log_tag_id": outcome.entry.log_tag_id,
        "error": None,
        "code": 201,
    }
    return Verdict(result=result, contract=ALERT.tag, recorded="accepted")
