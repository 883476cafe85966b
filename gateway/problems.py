"""RFC 9457 problem details: every refusal is application/problem+json saying what was wrong."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.base import ContractError
from gateway.submissions import Refused, UnknownContract
from gateway.writer import WriterUnavailable
from ledger.errors import ConflictError, FormatError, NotFoundError, NotSealedError

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger(__name__)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
# Every route documents its refusals as problem documents (and FastAPI then adds no
# application/json 422 of its own).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
    for status, text in (
        (400, "Bad request"),
        (401, "No or unknown credentials"),
        (403, "Not allowed for these credentials"),
        (404, "Not found"),
        (409, "Conflict, or not sealed yet (see Retry-After)"),
        (413, "Body over 1 MiB"),
        (422, "Invalid request"),
        (503, "Not recorded this time; retry (see Retry-After)"),
    )
}


class Problem(Exception):
    """Raise anywhere in a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    """Map every error a client can cause to a 4xx problem, and anything else to a logged 500."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code,
            str(exc.detail) if exc.status_code >= 500 else _title(exc.status_code),
            str(exc.detail),
            getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem_response(
            422,
            "Invalid request",
            f"{where}: {first.get('msg')}",
            errors=[
                {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg"))}
                for e in errors[:20]
            ],
        )

    @app.exception_handler(ContractError)
    async def _contract(_: Request, exc: ContractError) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return problem_response(409, "Conflict", str(exc), log_tag_id=exc.log_tag_id)

    @app.exception_handler(NotSealedError)
    async def _not_sealed(_: Request, exc: NotSealedError) -> JSONResponse:
        return problem_response(
            409,
            "Not sealed yet",
            f"{exc}; retry after the next checkpoint",
            headers={"Retry-After": str(app.state.settings.seal_interval.__ceil__())},
        )

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return problem_response(404, "Not found", str(exc))

    @app.exception_handler(FormatError)
    async def _format(_: Request, exc: FormatError) -> JSONResponse:
        return problem_response(422, "Invalid request", str(exc))

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        verdict = exc.verdict
        kept = ("log_tag_id", "rule", "last_seq", "last_start") if verdict.recorded else ()
        extra = {name: verdict.result[name] for name in kept if name in verdict.result}
        return problem_response(
            verdict.result["code"], verdict.title or "Rejected", str(exc), **extra
        )

    @app.exception_handler(UnknownContract)
    async def _unknown(_: Request, exc: UnknownContract) -> JSONResponse:
        return problem_response(404, "Unknown contract", str(exc.args[0]))

    @app.exception_handler(WriterUnavailable)
    async def _unavailable(_: Request, exc: WriterUnavailable) -> JSONResponse:
        log.error("append not committed: %s", exc)
        return problem_response(
            503, "Unavailable", f"not recorded: {exc}", headers={"Retry-After": "1"}
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            return await _server(request, exc)
        log.error("database unavailable: %s", exc)
        return problem_response(
            503,
            "Unavailable",
            f"the database is unavailable ({type(exc).__name__}); retry",
            headers={"Retry-After": "1"},
        )

    # Not under the handler for Exception: Starlette re-raises after that one answers, and
    # uvicorn then drops the connection.
    for kind in DATABASE_ERRORS:
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _server(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem_response(500, "Internal error", "the gateway failed; it has been logged")


DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    sqlite3.OperationalError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached or used right now, not that a
    statement was wrong: a connection refused or dropped (psycopg's OperationalError), an
    exhausted pool, or a SQLite file that stays locked or cannot be opened."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if isinstance(exc, sqlalchemy.exc.TimeoutError) or isinstance(cause, psycopg.OperationalError):
        return True
    return isinstance(cause, sqlite3.OperationalError) and any(
        sign in str(cause) for sign in ("locked", "unable to open", "disk I/O")
    )


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
