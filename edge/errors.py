"""The edge agent's errors; the CLI turns them into one line and an exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.errors import LedgerError

if TYPE_CHECKING:
    from edge.transports import Result


class EdgeError(LedgerError):
    """Base of every error the edge agent raises on purpose."""


class ConfigError(EdgeError):
    """The configuration file is missing, not TOML, or holds a wrong value."""


class DeliveryError(EdgeError):
    """A transient delivery failure: retry later with backoff.

    `results` holds the answers obtained before the failure, which still count.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        results: list[Result] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.results = results or []
