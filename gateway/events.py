"""The live feed behind GET /v1/stream: accepted entries and new checkpoints, resumable.

An event id is `<last entry index>:<last checkpoint size>` seen so far, so a client that
reconnects with Last-Event-ID gets exactly what it missed, from any gateway process:
the feed reads the database, not process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi.sse import ServerSentEvent
from sqlalchemy import Engine, func, select

from gateway.leader import psycopg_conninfo
from gateway.store import readings
from ledger.bundle import log_tag_id
from ledger.encoding import parse_json
from ledger.log import LOG_CHANNEL, Log
from ledger.storage import checkpoints, entries

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# With LISTEN/NOTIFY a stream is woken by each commit; the poll only backs it up (a
# listener reconnecting after a database restart misses what was sent meanwhile).
NOTIFIED_POLL_SECONDS = 2.0
PAGE = 500
# Rows of the reading index a filtered stream looks at per poll (two short columns each).
SCAN = 5_000


EVENT_ID = re.compile(r"(?P<entry>-1|0|[1-9][0-9]{0,18}):(?P<checkpoint>-1|0|[1-9][0-9]{0,18})")


class BadEventId(ValueError):
    """A Last-Event-ID this feed did not issue."""


@dataclass(frozen=True)
class Position:
    """What a client has seen: entries up to `entry`, checkpoints up to `checkpoint`."""

    entry: int
    checkpoint: int

    def __str__(self) -> str:
        return f"{self.entry}:{self.checkpoint}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse an event id: two decimal integers from -1 up, `entry:checkpoint`."""
        match = EVENT_ID.fullmatch(text)
        if match is None:
            raise BadEventId(f"Last-Event-ID {text!r} is not an id this stream sent")
        return cls(int(match["entry"]), int(match["checkpoint"]))


class EventFeed:
    """Reads the ledger by position, woken by new entries and checkpoints.

    Wake-ups come from this process's commits (`wake`) and, on PostgreSQL, from every
    process's commits through LISTEN/NOTIFY; they carry nothing, the log is the truth.
    """

    def __init__(self, log: Log) -> None:
        self.log = log
        self.engine: Engine = log.engine
        self._signal = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False

    def start(self) -> None:
        """Listen for other processes' commits (PostgreSQL), in the current event loop."""
        self._loop = asyncio.get_running_loop()
        if self.engine.dialect.name == "postgresql":
            self._listener = asyncio.create_task(self._listen(), name="patio-events-listen")

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    @property
    def listening(self) -> bool:
        """Whether other processes' commits wake this feed (PostgreSQL LISTEN is live)."""
        return self._listening

    def wakeup(self) -> asyncio.Event:
        """What the next wake-up sets: take it before reading, so no commit slips between."""
        return self._signal

    def wake(self) -> None:
        """Wake every stream now; callable from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._signal.set()
        self._signal = asyncio.Event()

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    psycopg_conninfo(self.engine), autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {LOG_CHANNEL}")
                    self._listening = True
                    self._wake()  # whatever was committed before LISTEN took effect
                    async for _ in conn.notifies():
                        self._wake()
            except psycopg.Error as exc:
                log.warning("event listener lost its database connection: %s", exc)
            finally:
                self._listening = False
            await asyncio.sleep(POLL_SECONDS)

    async def _idle(self, signal: asyncio.Event) -> None:
        """Until woken, or the poll interval passes."""
        timeout = NOTIFIED_POLL_SECONDS if self._listening else POLL_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), timeout)

    def now(self) -> Position:
        """The position of the newest entry and checkpoint."""
        with self.engine.connect() as conn:
            entry = conn.execute(select(func.coalesce(func.max(entries.c.idx), -1))).scalar_one()
            size = conn.execute(
                select(func.coalesce(func.max(checkpoints.c.tree_size), -1))
            ).scalar_one()
        return Position(entry, size)

    def _since(
        self, position: Position, community: str | None, readable: frozenset[str] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        """New entries visible to the caller, new checkpoints, and the newest index looked at.

        One statement returns the rows and, with them, how far they reach: under
        PostgreSQL's READ COMMITTED each statement has a snapshot of its own, so a position
        read by a second statement (a max()) could pass an entry committed in between.
        Appends commit in index order (one at a time, under the append lock, with their
        reading rows), so nothing can appear later below a position read from rows.
        """
        columns = (
            entries.c.idx,
            entries.c.leaf_hash,
            entries.c.entry,
            entries.c.device_id,
            entries.c.contract,
            entries.c.received_at,
        )
        if community is None and readable is None:
            # Every entry: the log itself is scanned.
            query = (
                select(entries.c.idx.label("scanned"), readings.c.community_id, *columns)
                .join(readings, readings.c.idx == entries.c.idx, isouter=True)
                .where(entries.c.idx > position.entry)
                .order_by(entries.c.idx)
                .limit(PAGE)
            )
        else:
            # The reading index is scanned (so a quiet community does not rescan the log),
            # every row of it, and the entry is joined to the rows the caller may see.
            scanned = (
                select(readings.c.idx, readings.c.community_id)
                .where(readings.c.idx > position.entry)
                .order_by(readings.c.idx)
                .limit(SCAN)
                .subquery()
            )
            visible = entries.c.idx == scanned.c.idx
            if community is not None:
                visible &= scanned.c.community_id == community
            if readable is not None:
                visible &= scanned.c.community_id.in_(readable)
            query = (
                select(scanned.c.idx.label("scanned"), scanned.c.community_id, *columns)
                .join(entries, visible, isouter=True)
                .order_by(scanned.c.idx)
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            cps = conn.execute(
                select(checkpoints)
                .where(checkpoints.c.tree_size > position.checkpoint)
                .order_by(checkpoints.c.tree_size)
                .limit(PAGE)
            ).all()
        found = [
            {
                "index": row.idx,
                "log_tag_id": log_tag_id(bytes(row.leaf_hash)),
                "device_id": row.device_id,
                "community_id": row.community_id,
                "contract": row.contract,
                "received_at": row.received_at,
                "payload": parse_json(bytes(row.entry), what="entry")["payload"],
            }
            for row in rows
            # not visible to the caller, or a payload since removed (docs/retention.md)
            if row.idx is not None and row.entry is not None
        ]
        sealed = [
            {"tree_size": c.tree_size, "root_hash": bytes(c.root_hash).hex(), "note": c.note}
            for c in cps
        ]
        return found, sealed, rows[-1].scanned if rows else position.entry

    async def stream(
        self, *, start: Position, community: str | None, readable: frozenset[str] | None
    ) -> AsyncIterator[ServerSentEvent]:
        """Events from `start` on, forever; the first, `ready`, says the feed is live."""
        position = start
        yield ServerSentEvent(event="ready", data={"position": str(position)}, id=str(position))
        while True:
            signal = self.wakeup()
            found, sealed, seen = await asyncio.to_thread(
                self._since, position, community, readable
            )
            if seen == position.entry and not sealed:
                await self._idle(signal)  # nothing new: until woken, or the next poll
                continue
            for item in found:
                position = Position(item["index"], position.checkpoint)
                yield ServerSentEvent(event="entry", data=item, id=str(position))
            for item in sealed:
                position = Position(position.entry, item["tree_size"])
                yield ServerSentEvent(event="checkpoint", data=item, id=str(position))
            position = Position(max(position.entry, seen), position.checkpoint)
