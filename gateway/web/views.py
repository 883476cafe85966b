"""The HTML pages: one template each, filled in by the page's script from the JSON API."""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from contracts.device_types import catalog as device_types
from gateway.web.i18n import COOKIE, LANGUAGES, catalog, language_of

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
# The pages render data with textContent only, so scripts come from /static alone.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, kw_only=True)
class Page:
    """A page: its path, its template and script (both named `name`), and its nav entry."""

    path: str
    name: str
    in_nav: bool = True
    # What the template needs besides the strings, computed per request.
    context: Callable[[], Mapping[str, Any]] = field(default=dict)


def _shipped_tariffs() -> list[dict[str, Any]]:
    """The tariff documents shipped in contracts/energy/tariffs/, by id."""
    folder = resources.files("contracts.energy") / "tariffs"
    found = [json.loads(f.read_text()) for f in folder.iterdir() if f.name.endswith(".json")]
    return sorted(found, key=lambda document: document["id"])


def _admin_context() -> Mapping[str, Any]:
    """The shipped device types, time zones and tariffs, for the admin's pickers."""
    tariffs = _shipped_tariffs()
    return {
        "device_types": sorted(device_types().values(), key=lambda t: t.name),
        "time_zones": sorted(zoneinfo.available_timezones()),
        "tariffs": tariffs,
        # Inert data for admin.js (type application/json is never run); '<' escaped as above.
        "tariffs_json": json.dumps(tariffs, ensure_ascii=False).replace("<", "\\u003c"),
    }


# A new page is one row here, `templates/<name>.html` and `static/<name>.js`.
PAGES = (
    Page(path="/", name="overview"),
    Page(path="/proof", name="proof"),
    Page(path="/reports", name="reports"),
    Page(path="/timeline", name="timeline"),
    Page(path="/admin", name="admin", context=_admin_context),
    Page(path="/signin", name="signin", in_nav=False),
)

router = APIRouter(include_in_schema=False)


def render(request: Request, page: Page) -> HTMLResponse:
    """The page in the request's language, with that language's catalog for its script."""
    language = language_of(request)
    strings = catalog(language)
    response = TEMPLATES.TemplateResponse(
        request,
        f"{page.name}.html",
        {
            "page": page,
            "pages": [p for p in PAGES if p.in_nav],
            "lang": language,
            "languages": LANGUAGES,
            "t": strings.__getitem__,
            # </script> cannot occur: json.dumps escapes no '<', so escape it here.
            "catalog_json": json.dumps(strings, ensure_ascii=False).replace("<", "\\u003c"),
            **page.context(),
        },
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Vary"] = "Accept-Language, Cookie"
    if request.query_params.get("lang") == language:
        response.set_cookie(COOKIE, language, max_age=365 * 86400, samesite="lax")
    return response


def _view(page: Page) -> Callable[[Request], Awaitable[HTMLResponse]]:
    async def view(request: Request) -> HTMLResponse:
        return render(request, page)

    view.__name__ = f"{page.name}_page"
    return view


for _page in PAGES:
    router.add_api_route(_page.path, _view(_page), methods=["GET"], response_class=HTMLResponse)
