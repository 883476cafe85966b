"""GET /v1/stream: Server-Sent Events of accepted entries and new checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from gateway.deps import GatewayDep, ReaderDep
from gateway.events import BadEventId, Position
from gateway.problems import Problem

router = APIRouter(prefix="/v1", tags=["stream"])


def start_position(
    gateway: GatewayDep,
    caller: ReaderDep,
    community: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Position:
    """Check the request before the stream starts, so refusals are still problem documents."""
    if community is not None and not caller.can_read(community):
        raise Problem(403, "Forbidden", f"this key may not read community {community!r}")
    try:
        return Position.parse(last_event_id) if last_event_id else gateway.events.now()
    except BadEventId as exc:
        raise Problem(422, "Invalid Last-Event-ID", str(exc)) from exc


@router.get("/stream", response_class=EventSourceResponse, summary="Live entries and checkpoints")
async def stream(
    gateway: GatewayDep,
    caller: ReaderDep,
    start: Annotated[Position, Depends(start_position)],
    community: str | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Events `entry` and `checkpoint`; reconnect with Last-Event-ID to resume exactly."""
    async for event in gateway.events.stream(
        start=start, community=community, readable=caller.readable
    ):
        yield event
