"""The ledger's error hierarchy; the edges (HTTP, CLI, MQTT) turn these into messages."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class FormatError(LedgerError):
    """Input that cannot be used at all: not JSON, missing fields, bad hex or base64."""


class VerificationError(LedgerError):
    """A well-formed object failed a check; `check` names which one."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


class ConflictError(LedgerError):
    """A submission collides with a recorded entry of the same device: the same seq with
    other bytes (`rule` "seq"), or a second aggregate for one minute (`rule` "minute").

    `last_seq` and `last_start` say where the device stands in the log (its highest seq, its
    latest minute), so a device that lost count can continue after them.
    """

    def __init__(
        self,
        device_id: str,
        seq: int,
        log_tag_id: str,
        *,
        rule: str = "seq",
        minute: str | None = None,
        last_seq: int | None = None,
        last_start: str | None = None,
    ) -> None:
        what = f"minute {minute}" if rule == "minute" else f"seq {seq}"
        super().__init__(
            f"device {device_id!r} {what} was already recorded with other bytes "
            f"as {log_tag_id}; the new submission is kept as evidence"
        )
        self.device_id = device_id
        self.seq = seq
        self.log_tag_id = log_tag_id
        self.rule = rule
        self.minute = minute
        self.last_seq = last_seq
        self.last_start = last_start


class NotFoundError(LedgerError):
    """The requested entry, checkpoint or tree size does not exist."""


class NotSealedError(LedgerError):
    """The entry exists but no checkpoint covers it yet."""


class KeyFileError(LedgerError):
    """A key file is missing, unreadable, malformed or would be overwritten."""


class PayloadRemovedError(NotFoundError):
    """The entry's payload was dropped under a redaction (retention or erasure); its leaf
    hash, and so its proofs, remain."""
