"""The background sealer: a checkpoint every PATIO_SEAL_INTERVAL seconds or N entries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.leader import Leadership
from ledger.log import Log, StoredCheckpoint
from ledger.storage import checkpoint_wal

log = logging.getLogger(__name__)


class Sealer:
    """Seals on a timer, or early when enough entries wait, while it leads (gateway.leader).

    Followers try to take the role at every tick, so a dead leader's role is taken over
    within one interval. The early wake counts this process's own entries only.
    """

    def __init__(
        self,
        log_: Log,
        *,
        interval: float,
        entries: int,
        on_seal: Callable[[StoredCheckpoint, float], None] | None = None,
    ) -> None:
        self.log = log_
        self.leadership = Leadership(log_.engine, "sealer")
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
        await asyncio.to_thread(self.leadership.resign)

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
                if not await asyncio.to_thread(self.leadership.try_lead):
                    self._pending = 0
                    continue
                await self.seal_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: try again next tick
                log.exception("seal failed; retrying at the next interval")
