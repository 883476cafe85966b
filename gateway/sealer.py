"""The background sealer: a checkpoint every PATIO_SEAL_INTERVAL seconds or N entries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ledger.log import Log, StoredCheckpoint
from ledger.storage import checkpoint_wal

log = logging.getLogger(__name__)


class Sealer:
    """Seals on a timer, or early when enough entries wait; one at a time per database."""

    def __init__(
        self,
        log_: Log,
        *,
        interval: float,
        entries: int,
        on_seal: Callable[[StoredCheckpoint, float], None] | None = None,
    ) -> None:
        self.log = log_
        self.interval = interval
        self.entries = entries
        self.on_seal = on_seal
        self._pending = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Run in the current event loop."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="patio-sealer")

    async def stop(self) -> None:
        """Stop after the seal under way, if any."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def appended(self, count: int) -> None:
        """Called from any thread after a commit: wake the sealer early past N entries."""
        self._pending += count
        if self._pending >= self.entries and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def seal_now(self) -> StoredCheckpoint:
        """Seal at once (the admin route, and each tick)."""
        self._pending = 0
        started = time.perf_counter()
        checkpoint = await asyncio.to_thread(self._seal)
        if self.on_seal is not None:
            self.on_seal(checkpoint, time.perf_counter() - started)
        return checkpoint

    def _seal(self) -> StoredCheckpoint:
        checkpoint = self.log.seal()
        # The writer leaves the SQLite WAL to us (see ledger.storage.open_engine).
        checkpoint_wal(self.log.engine)
        return checkpoint

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            try:
                await self.seal_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: try again next tick
                log.exception("seal failed; retrying at the next interval")
