"""GET /v1/stream: Server-Sent Events of accepted entries and new checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from gateway.deps import CommunityFilter, GatewayDep, ReaderDep
from gateway.events import BadEventId, Position
from gateway.problems import Problem

router = APIRouter(prefix="/v1", tags=["stream"])


def start_position(
    gateway: GatewayDep,
    caller: ReaderDep,
    community: CommunityFilter = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Position:
    """Check the request before the stream starts, so refusals are still problem documents."""
    if community is not None and not caller.can_read(community):
        raise Problem(403, "Forbidden", f"this key may not read community {community!r}")
    now = gateway.events.now()
    if last_event_id is None:
        return now
    try:
        start = Position.parse(last_event_id)
    except BadEventId as exc:
        raise Problem(422, "Invalid Last-Event-ID", str(exc)) from exc
    # An id ahead of the log was not sent by this log: resuming there would skip entries.
    if start.entry > now.entry or start.checkpoint > now.checkpoint:
        raise Problem(
            422,
            "Invalid Last-Event-ID",
            f"Last-Event-ID {last_event_id!r} is ahead of this log (now {now}); "
            "reconnect without it",
        )
    return start


@router.get("/stream", response_class=EventSourceResponse, summary="Live entries and checkpoints")
async def stream(
    gateway: GatewayDep,
    caller: ReaderDep,
    start: Annotated[Position, Depends(start_position)],
    community: CommunityFilter = None,
) -> AsyncIterator[ServerSentEvent]:
    """A `ready` event, then `entry` and `checkpoint`; resume with Last-Event-ID exactly."""
    async for event in gateway.events.stream(
        start=start, community=community, readable=caller.readable
    ):
        yield event
