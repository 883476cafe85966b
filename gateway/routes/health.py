"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.problems import Problem

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers and the log has a checkpoint")
async def readyz(request: Request) -> dict[str, Any]:
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise Problem(503, "Not ready", "the gateway is starting")
    try:
        with gateway.log.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise Problem(503, "Not ready", f"database unreachable: {type(exc).__name__}") from exc
    latest = gateway.log.latest_checkpoint()
    return {"status": "ready", "tree_size": latest.tree_size if latest else None}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
