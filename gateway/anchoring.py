"""The background anchorer: the latest checkpoint on an EVM chain, when PATIO_CHAIN_RPC is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from gateway.leader import Leadership
from ledger.errors import LedgerError
from ledger.log import Log
from ledger.storage import anchors

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AnchorSettings:
    """PATIO_CHAIN_RPC, PATIO_ANCHOR_CONTRACT, PATIO_CHAIN_KEY_FILE (or PATIO_CHAIN_KEY),
    PATIO_ANCHOR_EVERY_CHECKPOINTS, PATIO_ANCHOR_EVERY_MINUTES, PATIO_ANCHOR_CONFIRMATIONS,
    PATIO_ANCHOR_POLL, PATIO_ANCHOR_STUCK_AFTER (seconds before a fee bump)."""

    rpc_url: str
    contract: str | None
    key_file: Path | None
    every_checkpoints: int
    every_minutes: float | None
    confirmations: int
    poll_seconds: float
    stuck_after: float = 600.0

    @classmethod
    def from_env(cls) -> AnchorSettings | None:
        """None when anchoring is not configured."""
        rpc = os.environ.get("PATIO_CHAIN_RPC")
        if not rpc:
            return None
        minutes = os.environ.get("PATIO_ANCHOR_EVERY_MINUTES")
        key_file = os.environ.get("PATIO_CHAIN_KEY_FILE")
        return cls(
            rpc_url=rpc,
            contract=os.environ.get("PATIO_ANCHOR_CONTRACT") or None,
            key_file=Path(key_file) if key_file else None,
            every_checkpoints=int(os.environ.get("PATIO_ANCHOR_EVERY_CHECKPOINTS", "1")),
            every_minutes=float(minutes) if minutes else None,
            confirmations=int(os.environ.get("PATIO_ANCHOR_CONFIRMATIONS", "1")),
            poll_seconds=float(os.environ.get("PATIO_ANCHOR_POLL", "5")),
            stuck_after=float(os.environ.get("PATIO_ANCHOR_STUCK_AFTER", "600")),
        )


class AnchorTask:
    """Runs one anchoring pass every poll interval while it leads (gateway.leader), so one
    process of a deployment sends transactions; RPC failures are retried next pass."""

    def __init__(
        self,
        ledger_log: Log,
        settings: AnchorSettings,
        on_lag: Callable[[int], None] | None = None,
    ) -> None:
        from ledger.anchoring import Anchorer, AnchorPolicy, connect, load_chain_account

        self.settings = settings
        self.leadership = Leadership(ledger_log.engine, "anchorer")
        self.anchorer = Anchorer(
            log=ledger_log,
            w3=connect(settings.rpc_url),
            account=load_chain_account(settings.key_file),
            contract=settings.contract,
            policy=AnchorPolicy(
                every_checkpoints=settings.every_checkpoints, every_minutes=settings.every_minutes
            ),
            confirmations=settings.confirmations,
            stuck_after=settings.stuck_after,
        )
        self.log = ledger_log
        self.on_lag = on_lag
        self._task: asyncio.Task[None] | None = None

    def lag(self) -> int:
        """Entries in the latest checkpoint that no confirmed anchor covers yet."""
        latest = self.log.latest_checkpoint()
        with self.log.engine.connect() as conn:
            anchored: int = conn.execute(
                select(func.coalesce(func.max(anchors.c.tree_size), 0)).where(
                    anchors.c.status == "confirmed"
                )
            ).scalar_one()
        return max(0, (latest.tree_size if latest else 0) - anchored)

    def start(self) -> None:
        """Run in the current event loop."""
        self._task = asyncio.create_task(self._run(), name="patio-anchorer")

    async def stop(self) -> None:
        """Stop between passes."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.leadership.resign)

    async def _run(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.leadership.try_lead):
                    done = await asyncio.to_thread(self.anchorer.run_once)
                    log.info("anchor pass: %s", done.describe())
                    if self.on_lag is not None:
                        self.on_lag(await asyncio.to_thread(self.lag))
            except LedgerError as exc:  # RPC down or refusing: the pending anchor is kept
                log.warning(
                    "anchor pass failed, retrying in %ss: %s", self.settings.poll_seconds, exc
                )
            except Exception:
                log.exception("anchor pass failed unexpectedly")
            await asyncio.sleep(self.settings.poll_seconds)
