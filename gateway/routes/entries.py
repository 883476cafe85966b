"""Entries: batch submission, lookup by log tag id, proofs, queries and the bulk export."""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts.alert import ALERT_DEVICE
from contracts.device_registry import REGISTRY_DEVICE
from gateway.deps import (
    MAX_INDEX,
    CallerDep,
    CommunityFilter,
    DeviceFilter,
    Gateway,
    GatewayDep,
    ReaderDep,
    json_body,
)
from gateway.problems import Problem
from gateway.store import device_keys, readings
from ledger.errors import NotFoundError
from ledger.log import StoredEntry

router = APIRouter(prefix="/v1", tags=["entries"])


class EntriesRequest(BaseModel):
    """A batch of signed envelopes for one contract.

    An element is any JSON value: the contract answers a malformed one in its own result
    slot (422), so one bad envelope never sinks the others.
    """

    contract: str = Field(examples=["energy_minute"])
    envelopes: Annotated[list[Any], Field(min_length=1, max_length=1000)]


class EnvelopeResult(BaseModel):
    """One envelope's outcome, in submission order."""

    status: Literal["accepted", "duplicate", "rejected"]
    log_tag_id: str | None
    error: str | None
    code: int


class EntriesResponse(BaseModel):
    """Results in the order of the envelopes."""

    results: list[EnvelopeResult]


class EntryView(BaseModel):
    """An entry and where it sits in the log."""

    log_tag_id: str
    index: int
    entry: dict[str, Any] | None = Field(description="null once the payload was removed")
    device_id: str | None
    community_id: str | None
    sealed: bool
    redacted: dict[str, str] | None = Field(
        default=None, description="why and when the payload was removed (docs/retention.md)"
    )


class EntryPage(BaseModel):
    """A page of entries; pass `next_cursor` back as `cursor` for the next one."""

    entries: list[EntryView]
    next_cursor: int | None


class ExportItem(BaseModel):
    """One entry with the device key that signed it."""

    index: int
    log_tag_id: str
    entry: dict[str, Any] | None = Field(description="null once the payload was removed")
    device_key: str | None
    redacted: dict[str, str] | None = None


class ExportPage(BaseModel):
    """A page of the full log in index order."""

    entries: list[ExportItem]
    next: int | None


@router.post(
    "/entries",
    response_class=Response,
    responses={200: {"model": EntriesResponse, "content": {"application/json": {}}}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EntriesRequest.model_json_schema()}},
        }
    },
    summary="Submit signed envelopes",
)
async def submit(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    body = await submit_entries(gateway, request.headers.get("content-type"), await request.body())
    return Response(body, media_type="application/json")


async def submit_entries(gateway: Gateway, content_type: str | None, body: bytes) -> bytes:
    """The submission route's work: the body validated from its bytes, the results as JSON."""
    request = json_body(EntriesRequest, content_type, body)
    results = await gateway.submissions.submit_async(request.contract, request.envelopes)
    # The results are plain JSON already: no response-model validation.
    return json.dumps({"results": results}).encode()


class SubmitFastPath:
    """POST /v1/entries as plain ASGI, ahead of FastAPI's routing: what devices hit all day.

    Route matching over every route, dependency solving and the Request and Response
    objects cost about 90 us a request, a third of the HTTP process's share; this layer
    runs the same `submit_entries` without them. Errors go to the app's own exception
    handlers, so the answers are the same problem documents. The FastAPI route above
    documents the operation and serves it wherever this layer is not in front.
    """

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        self.route = next(
            r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is submit
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/entries":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # for the request metrics' route label
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
        try:
            chunks = []
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            gateway: Gateway = self.fastapi.state.gateway
            body = await submit_entries(
                gateway, content_type.decode("latin-1") if content_type else None, b"".join(chunks)
            )
        except Exception as exc:
            handler = next(
                self.fastapi.exception_handlers[kind]
                for kind in type(exc).__mro__
                if kind in self.fastapi.exception_handlers
            )
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):  # Starlette allows sync and async handlers
                response = await response
            await response(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _community(gateway: Any, stored: StoredEntry) -> str | None:
    if stored.device_id is None:
        return None
    device = gateway.directory.device(stored.device_id)
    return device.community_id if device else None


def _visible(gateway: Any, caller: Any, tag: str) -> tuple[StoredEntry, str | None]:
    stored = gateway.log.entry_by_tag(tag)
    community = _community(gateway, stored)
    if not caller.audits and (community is None or not caller.can_read(community)):
        # Not 403: an app must not learn that an entry of another community exists.
        raise NotFoundError(f"no entry with log tag id {tag}")
    return stored, community


def _sealed_size(gateway: Any) -> int:
    latest = gateway.log.latest_checkpoint()
    return latest.tree_size if latest else 0


def _view(
    gateway: Any, stored: StoredEntry, community: str | None, sealed_size: int
) -> dict[str, Any]:
    view = {
        "log_tag_id": stored.log_tag_id,
        "index": stored.index,
        "entry": None if stored.entry is None else stored.entry_object(),
        "device_id": stored.device_id,
        "community_id": community,
        "sealed": stored.index < sealed_size,
    }
    if stored.entry is None:
        redaction = gateway.log.redaction(stored.index)
        view["redacted"] = redaction.to_json() if redaction else None
    return view


@router.get("/entries/{log_tag_id}", response_model=EntryView, summary="An entry by log tag id")
async def get_entry(log_tag_id: str, gateway: GatewayDep, caller: ReaderDep) -> dict[str, Any]:
    stored, community = _visible(gateway, caller, log_tag_id)
    return _view(gateway, stored, community, _sealed_size(gateway))


@router.get(
    "/entries/{log_tag_id}/proof",
    summary="A patio-proof/v1 bundle against the latest checkpoint (409 until sealed)",
)
async def get_proof(log_tag_id: str, gateway: GatewayDep, caller: ReaderDep) -> dict[str, Any]:
    stored, _ = _visible(gateway, caller, log_tag_id)
    if stored.entry is None:  # payload removed: the bundle carries the leaf hash instead
        return gateway.log.bundle(log_tag_id, device_key=None).to_json()
    obj = stored.entry_object()
    key = gateway.directory.key_that_signed(stored.device_id or "", obj["payload"], obj["sig"])
    if key is None:
        raise Problem(409, "No device key", "no registered key verifies this entry's signature")
    return gateway.log.bundle(log_tag_id, device_key=key).to_json()


@router.get("/entries", response_model=EntryPage, summary="Query entries (SaaS)")
async def list_entries(
    gateway: GatewayDep,
    caller: ReaderDep,
    community: CommunityFilter = None,
    device: DeviceFilter = None,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339, inclusive")] = None,
    to: Annotated[str | None, Query(description="RFC 3339, exclusive")] = None,
    cursor: Annotated[int, Query(ge=-1, le=MAX_INDEX)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    from ledger.encoding import parse_rfc3339, rfc3339_utc

    query = select(readings).where(readings.c.idx > cursor).order_by(readings.c.idx).limit(limit)
    if community is not None:
        if not caller.can_read(community):
            raise Problem(403, "Forbidden", f"this key may not read community {community!r}")
        query = query.where(readings.c.community_id == community)
    elif not caller.audits:
        query = query.where(readings.c.community_id.in_(caller.readable or frozenset()))
    if device is not None:
        query = query.where(readings.c.device_id == device)
    if from_ is not None:
        query = query.where(readings.c.start >= rfc3339_utc(parse_rfc3339(from_, what="from")))
    if to is not None:
        query = query.where(readings.c.start < rfc3339_utc(parse_rfc3339(to, what="to")))
    with gateway.log.engine.connect() as conn:
        rows = conn.execute(query).all()
    stored = gateway.log.entries_at([r.idx for r in rows])
    sealed = _sealed_size(gateway)
    page = [_view(gateway, stored[row.idx], row.community_id, sealed) for row in rows]
    return {"entries": page, "next_cursor": rows[-1].idx if len(rows) == limit else None}


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"model": ExportPage, "content": {"application/json": {}}}},
    summary="Every entry in index order (audit)",
)
async def export(
    gateway: GatewayDep,
    caller: CallerDep,
    start: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> Response:
    if not caller.audits:
        raise Problem(
            401 if caller.app_id is None and not caller.admin else 403,
            "Audit only",
            "the export needs an app key with the audit scope",
        )
    chunk = gateway.log.entries(start=start, limit=limit)
    device_ids = {e.device_id for e in chunk if e.device_id}
    with gateway.log.engine.connect() as conn:
        known: dict[str, list[str]] = {}
        for row in conn.execute(
            select(device_keys.c.device_id, device_keys.c.public_key).where(
                device_keys.c.device_id.in_(device_ids)
            )
        ):
            known.setdefault(row.device_id, []).append(row.public_key)
    known[REGISTRY_DEVICE] = [gateway.directory.registry_key]
    known[ALERT_DEVICE] = [gateway.directory.registry_key]  # alert entries: the same key
    items = []
    for stored in chunk:
        if stored.entry is None:
            # Payload removed: the log tag id carries the leaf hash the audit folds in.
            redaction = gateway.log.redaction(stored.index)
            items.append(
                b'{"index":%d,"log_tag_id":"%s","entry":null,"device_key":null,"redacted":%s}'
                % (
                    stored.index,
                    stored.log_tag_id.encode(),
                    json.dumps(redaction.to_json() if redaction else {}).encode(),
                )
            )
            continue
        candidates = known.get(stored.device_id or "", [])
        # One key: it is the signer's or the entry is bad, which the auditor will find.
        if len(candidates) == 1:
            key: str | None = candidates[0]
        elif candidates:
            obj = stored.entry_object()
            key = gateway.directory.key_that_signed(
                stored.device_id or "", obj["payload"], obj["sig"]
            )
        else:
            key = None
        # The stored entry bytes are JCS, so valid JSON: they go out as they are, unparsed.
        items.append(
            b'{"index":%d,"log_tag_id":"%s","entry":%s,"device_key":%s}'
            % (stored.index, stored.log_tag_id.encode(), stored.entry, json.dumps(key).encode())
        )
    nxt = chunk[-1].index + 1 if len(chunk) == limit else None
    body = b'{"entries":[' + b",".join(items) + b'],"next":' + json.dumps(nxt).encode() + b"}"
    return Response(body, media_type="application/json")
