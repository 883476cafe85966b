"""The dashboard: server-rendered pages over the gateway's JSON API, its assets in the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware

from gateway import problems
from gateway.web import api, docs, views

STATIC_DIR = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    """Add the pages, the JSON reads they need, the static files and the offline /docs."""
    app.include_router(api.router, responses=problems.PROBLEM_RESPONSES)
    app.include_router(views.router)
    app.include_router(docs.router)
    # Compressed on the way out: what the overview loads before its first render went
    # from 39.7 to 24.1 KiB (bench/web.py).
    static = GZipMiddleware(StaticFiles(directory=STATIC_DIR), minimum_size=1024)
    app.mount("/static", static, name="static")
