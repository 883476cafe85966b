"""The dashboard's string catalogs, one JSON file per language, and the language of a request."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from starlette.requests import Request

CATALOG_DIR = Path(__file__).parent / "i18n"
LANGUAGES = ("en", "es")
DEFAULT_LANGUAGE = "en"
COOKIE = "patio_lang"


@cache
def catalog(language: str) -> dict[str, str]:
    """Every string of the dashboard in `language` (key -> text)."""
    strings: dict[str, str] = json.loads((CATALOG_DIR / f"{language}.json").read_text("utf-8"))
    return strings


def accepted(header: str) -> list[str]:
    """Primary language tags of an Accept-Language header, best first (RFC 9110 12.5.4)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.split("-")[0].strip().lower()))
    return [tag for _, _, tag in sorted(ranked)]


def language_of(request: Request) -> str:
    """The switch (?lang=, then its cookie) wins over the browser's Accept-Language."""
    for chosen in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if chosen in LANGUAGES:
            return chosen
    for tag in accepted(request.headers.get("accept-language", "")):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE
