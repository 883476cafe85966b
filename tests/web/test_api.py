"""The dashboard's HTTP side over real HTTP: its list reads (SQLite and PostgreSQL), the pages,
the language choice, the catalogs and the offline /docs."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

from fastapi.routing import APIRoute

from gateway.app import create_app
from gateway.config import Settings
from tests.gateway.conftest import gateway  # noqa: F401 -- the gateway per backend
from tests.gateway.server import Gateway

WEB = Path(__file__).resolve().parents[2] / "gateway" / "web"


def test_me_says_what_a_key_may_read(gateway: Gateway) -> None:  # noqa: F811
    gateway.community("me-a")
    assert gateway.admin.get("/v1/me").json()["admin"] is True
    reader = gateway.app_key("read:me-a")
    with gateway.client(reader) as client:
        me = client.get("/v1/me").json()
    assert me == {
        "admin": False,
        "app_id": me["app_id"],
        "scopes": ["read:me-a"],
        "communities": ["me-a"],
    }
    with gateway.client(gateway.app_key("audit")) as client:
        assert client.get("/v1/me").json()["communities"] is None
    with gateway.client() as client:
        reply = client.get("/v1/me")
    assert reply.status_code == 401
    assert reply.headers["content-type"].startswith("application/problem+json")


def test_one_route_per_path_and_method() -> None:
    """The dashboard reads the registry's paged listings; no path is served twice."""
    app = create_app(Settings())
    seen: Counter[tuple[str, str]] = Counter(
        (route.path, method)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    )
    assert [key for key, count in seen.items() if count > 1] == []
    assert ("/v1/communities/{community_id}/devices", "GET") not in seen


def test_apps_list_names_and_scopes_never_keys(gateway: Gateway) -> None:  # noqa: F811
    key = gateway.app_key("read:apps-x", "audit")
    apps = gateway.admin.get("/v1/apps").json()["apps"]
    mine = [a for a in apps if a["scopes"] == ["audit", "read:apps-x"]]
    assert mine and mine[-1]["revoked"] is False
    assert key not in json.dumps(apps) and "key_hash" not in json.dumps(apps)


def test_pages_are_served_with_a_strict_policy(gateway: Gateway) -> None:  # noqa: F811
    with gateway.client() as client:
        for path in ("/", "/proof", "/reports", "/timeline", "/admin", "/signin"):
            reply = client.get(path)
            assert reply.status_code == 200, path
            assert reply.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in reply.headers["content-security-policy"]
            for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', reply.text):
                assert client.get(asset).status_code == 200, asset


def test_language_follows_the_browser_and_the_switch(gateway: Gateway) -> None:  # noqa: F811
    with gateway.client() as client:
        spanish = client.get("/", headers={"Accept-Language": "fr;q=0.9, es-ES, en;q=0.5"})
        assert '<html lang="es">' in spanish.text and "<h1>Resumen</h1>" in spanish.text
        assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "de"}).text
        switched = client.get("/proof?lang=es", headers={"Accept-Language": "en"})
        assert "<h1>Comprobar prueba</h1>" in switched.text
        assert client.cookies.get("patio_lang") == "es"
        assert '<html lang="es">' in client.get("/", headers={"Accept-Language": "en"}).text


def test_docs_work_offline(gateway: Gateway) -> None:  # noqa: F811
    with gateway.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assets = re.findall(r"""['"]((?:https?:)?//[^'"]+|/static/[^'"]+)['"]""", page.text)
        assert assets and all(a.startswith("/static/vendor/") for a in assets), assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
        assert client.get("/redoc").status_code == 404


def test_every_string_is_in_both_catalogs() -> None:
    en = json.loads((WEB / "i18n" / "en.json").read_text())
    es = json.loads((WEB / "i18n" / "es.json").read_text())
    assert en.keys() == es.keys()
    assert all(value.strip() for value in [*en.values(), *es.values()])
    used: set[str] = set()
    for source in [*(WEB / "templates").glob("*.html"), *(WEB / "static").glob("*.js")]:
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_. ]+)["']""", source.read_text()))
    assert used and used <= en.keys(), used - en.keys()
    for prefix in ("check.", "proof.step.", "overview.live.", "page.", "lang."):
        assert any(key.startswith(prefix) for key in en), prefix


def test_vendored_files_are_pinned_by_version() -> None:
    vendor = WEB / "static" / "vendor"
    readme = (vendor / "README.md").read_text()
    for item in vendor.iterdir():
        if item.name not in ("README.md", "SHA256SUMS"):
            assert re.search(r"\d+\.\d+\.\d+", item.name), item.name
            assert item.name in readme, item.name


def test_vendored_files_are_the_released_ones() -> None:
    """SHA256SUMS was written when the files were copied from their npm tarballs; the
    command static/vendor/README.md gives for it reproduces it exactly."""
    vendor = WEB / "static" / "vendor"
    command = re.search(r"\(`(find \. .*?)`\)", (vendor / "README.md").read_text(), re.S)
    assert command
    run = subprocess.run(
        command.group(1).replace("> SHA256SUMS", ""),
        shell=True,
        cwd=vendor,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == (vendor / "SHA256SUMS").read_text()
