"""The gateway's alert task: evaluates and delivers in a worker thread every interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from gateway.alerts.evaluator import Evaluator
from gateway.leader import Leadership

log = logging.getLogger(__name__)
# Entries in one pass beyond what live devices send between two passes (a thousand devices
# bring 17 a second): a backlog streaming in, an edge's outbox emptying or a bulk import.
BACKLOG = 1_000


@dataclass(frozen=True, kw_only=True)
class AlertConfig:
    """The alert settings of the gateway process (environment)."""

    interval: float = 1.0  # PATIO_ALERT_INTERVAL, seconds between passes
    # PATIO_ALERT_BACKLOG_INTERVAL: seconds between passes while a backlog streams in
    backlog_interval: float = 5.0
    retry_base: float = 30.0  # PATIO_ALERT_RETRY_SECONDS, the first retry's delay
    # PATIO_ALERT_CLAIM_SECONDS: an attempt unfinished after this long is unconfirmed
    claim_seconds: int = 120
    smtp_url: str | None = None  # PATIO_SMTP_URL, smtp://[user:password@]host:port
    smtp_from: str = "patio-alerts@localhost"  # PATIO_SMTP_FROM

    @classmethod
    def from_env(cls) -> AlertConfig:
        """Read PATIO_ALERT_INTERVAL, _BACKLOG_INTERVAL, _RETRY_SECONDS, _CLAIM_SECONDS,
        PATIO_SMTP_URL, _FROM."""
        return cls(
            interval=float(os.environ.get("PATIO_ALERT_INTERVAL", "1")),
            backlog_interval=float(os.environ.get("PATIO_ALERT_BACKLOG_INTERVAL", "5")),
            retry_base=float(os.environ.get("PATIO_ALERT_RETRY_SECONDS", "30")),
            claim_seconds=int(os.environ.get("PATIO_ALERT_CLAIM_SECONDS", "120")),
            smtp_url=os.environ.get("PATIO_SMTP_URL") or None,
            smtp_from=os.environ.get("PATIO_SMTP_FROM", cls.smtp_from),
        )


class AlertTask:
    """Runs the evaluator after commits, off the event loop and outside the writer; with
    several gateway processes on PostgreSQL, only in the one holding the `alerts` role
    (gateway.leader): the others would read every entry only to drop their passes."""

    def __init__(
        self, evaluator: Evaluator, *, interval: float, backlog_interval: float | None = None
    ) -> None:
        self.evaluator = evaluator
        self.interval = interval
        self.backlog_interval = interval if backlog_interval is None else backlog_interval
        self.leadership = Leadership(evaluator.engine, "alerts")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the current event loop."""
        self._task = asyncio.create_task(self._run(), name="patio-alerts")

    def wake(self) -> None:
        """Evaluate now (an acknowledgment, a rule change)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop after the pass under way."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.leadership.resign)

    def _pass(self) -> int:
        """Evaluate to the log's end, then deliver; the entries gone past."""
        if not self.leadership.try_lead():
            return 0  # another gateway process evaluates; this one takes over if it dies
        read = 0
        while True:  # a backlog: read it all before the clock and the outbox
            step = self.evaluator.evaluate()
            read += step
            if step < self.evaluator.batch:
                break
        self.evaluator.deliver()
        return read

    async def _run(self) -> None:
        wait = self.interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()
            wait = self.interval
            try:
                read = await asyncio.to_thread(self._pass)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: try again next tick
                log.exception("alert pass failed; retrying at the next interval")
                continue
            # While a backlog streams in, fewer and larger passes: what a pass costs whatever
            # it reads (the states, every subject it touched written, a commit) is spread
            # over more entries; readings that old are reported late anyway.
            if read >= BACKLOG:
                wait = self.backlog_interval
