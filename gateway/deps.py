"""Typed request dependencies: the gateway's state and who is calling."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, TypeVar

import jiter
from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ValidationError
from sqlalchemy import select

from gateway.auth import Caller, secret_hash
from gateway.config import Settings
from gateway.directory import Directory
from gateway.events import EventFeed
from gateway.problems import Problem
from gateway.readings import ReadingIndex
from gateway.sealer import Sealer
from gateway.store import admin_tokens, apps
from gateway.submissions import Submissions
from gateway.writer import WriterClient
from ledger.keys import NamedKey
from ledger.log import Log

M = TypeVar("M", bound=BaseModel)

# Indexes, sizes and ids are stored as signed 64-bit integers (BIGINT).
MAX_INDEX = 2**63 - 1
# Row ids of the gateway's own tables (apps) are INTEGER: 32 bits on PostgreSQL.
MAX_ROW_ID = 2**31 - 1

# Device and community ids (DESIGN.md pinned format 3). Every id a request names is checked
# against it at the edge, so text a database cannot store (a NUL) never reaches a query.
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
CommunityPath = Annotated[str, Path(pattern=ID_PATTERN, description="a community id")]
DevicePath = Annotated[str, Path(pattern=ID_PATTERN, description="a device id")]
CommunityFilter = Annotated[
    str | None, Query(pattern=ID_PATTERN, description="only this community's entries")
]
DeviceFilter = Annotated[str | None, Query(pattern=ID_PATTERN, description="only this device's")]


def storable(text: str) -> str:
    """Refuse what a database cannot store: a NUL (PostgreSQL text) or a lone surrogate
    (not encodable as UTF-8; a JSON body may carry one as an escape)."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("must not contain a lone surrogate") from None
    return text


# Free text (names): any text both databases can store.
Text = Annotated[str, AfterValidator(storable)]


@dataclass(kw_only=True)
class Gateway:
    """Everything a request handler may use, built once per process by the lifespan."""

    settings: Settings
    log: Log
    registry_key: NamedKey
    directory: Directory
    writer: WriterClient
    submissions: Submissions
    readings: ReadingIndex
    sealer: Sealer
    events: EventFeed


def json_body(model: type[M], content_type: str | None, body: bytes) -> M:
    """Validate a JSON body as FastAPI would for a body parameter, with pydantic's own parser.

    For the hot route: pydantic's parser (jiter, as model_validate_json uses) skips both
    json.loads and FastAPI's dependency machinery. Parsing first and validating the Python
    values is the same check at a seventh of the cost: model_validate_json spends 32 us
    per envelope building each `dict[str, Any]`, the two steps 4.7 us. A duplicate key is
    refused, as `ledger.encoding.parse_json` refuses it (one behaviour for one format): jiter,
    the same parser standalone, checks for them at 3.7 us an envelope of CPU (5.8 -> 9.5 us
    for the parse, timed alone on 2026-11-30).
    """
    media = (content_type or "application/json").partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise RequestValidationError(
            [{"type": "content_type", "loc": ("body",), "msg": "the body must be JSON"}]
        )
    try:
        value = jiter.from_json(body, catch_duplicate_keys=True)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"Invalid JSON: {exc}"}]
        ) from None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


async def get_gateway(request: Request) -> Gateway:
    """The process's gateway state."""
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


# Token lookups are cached this long: a revoked or rotated app key stops working within it.
TOKEN_CACHE_SECONDS = 1.0
_token_cache: dict[str, tuple[float, Caller | None]] = {}


def _lookup(gateway: Gateway, digest: str) -> Caller | None:
    now = time.monotonic()
    cached = _token_cache.get(digest)
    if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
        return cached[1]
    with gateway.log.engine.connect() as conn:
        if conn.execute(select(admin_tokens).where(admin_tokens.c.token_hash == digest)).first():
            caller: Caller | None = Caller(admin=True)
        else:
            app = conn.execute(
                select(apps).where(apps.c.key_hash == digest, apps.c.revoked.is_(False))
            ).first()
            caller = (
                None if app is None else Caller(app_id=app.id, scopes=frozenset(app.scopes.split()))
            )
    if len(_token_cache) > 10_000:
        _token_cache.clear()
    _token_cache[digest] = (now, caller)
    return caller


def forget_tokens() -> None:
    """Drop cached token lookups after this process changed a key."""
    _token_cache.clear()


async def get_caller(request: Request, gateway: GatewayDep) -> Caller:
    """Resolve `Authorization: Bearer <token>` to the admin, an app, or an anonymous caller."""
    header = request.headers.get("authorization")
    if not header:
        return Caller()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "Unauthorized",
            "use Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = _lookup(gateway, secret_hash(token.strip()))
    if caller is None:
        raise Problem(
            401,
            "Unauthorized",
            "unknown or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def require_admin(caller: CallerDep) -> Caller:
    """Only the admin token passes."""
    if not caller.admin:
        raise Problem(
            401 if caller.app_id is None else 403,
            "Admin only",
            "this needs the admin token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


async def require_reader(caller: CallerDep) -> Caller:
    """The admin or an app key."""
    if not caller.admin and caller.app_id is None:
        raise Problem(
            401,
            "Unauthorized",
            "this needs an app key or the admin token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
ReaderDep = Annotated[Caller, Depends(require_reader)]
