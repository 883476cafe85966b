"""Browser fixtures: Debian's chromium driven headless by Playwright, against a real gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.server import Gateway, start_gateway

CHROMIUM = Path(os.environ.get("PATIO_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = (
    Path(
        os.environ.get("PATIO_ARTIFACTS", Path(__file__).resolve().parents[2] / "tmp" / "artifacts")
    )
    / "web"
)
PHONE = {"width": 360, "height": 740}


def require_chromium() -> None:
    """Skip without chromium here; fail in CI (PATIO_REQUIRE_SERVICES=1)."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("PATIO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; PATIO_REQUIRE_SERVICES=1 demands it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per test module."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def web_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A real gateway process on SQLite (the pages read only the HTTP API)."""
    server = start_gateway(tmp_path_factory.mktemp("web-gateway"))
    try:
        yield server
    finally:
        server.stop()


class Tab:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.expected_errors = 0
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("response", self._expected_refusal)

    def _expected_refusal(self, response: Any) -> None:
        """Answers a page expects, which chromium logs as failed loads: a community without
        a tariff (404 of GET .../tariff), a report before the first checkpoint (409) or before
        the first that covers its community (404)."""
        path = response.url.split("?")[0]
        if (response.status, path.endswith("/tariff"), path.endswith("/v1/reports")) in (
            (404, True, False),
            (409, False, True),
            (404, False, True),
        ):
            self.expected_errors += 1

    @property
    def unexpected_errors(self) -> list[str]:
        """The console errors, less one failed load per expected refusal."""
        errors, expected = [], self.expected_errors
        for error in self.errors:
            if expected and error.startswith("Failed to load resource"):
                expected -= 1
                continue
            errors.append(error)
        return errors

    def open(self, path: str) -> Any:
        """Load a page and wait until its script has rendered from the API."""
        self.page.goto(self.base_url + path)
        self.page.wait_for_selector("body[data-rendered='1']", timeout=15_000)
        return self.page

    def sign_in(self, token: str) -> None:
        """Sign in through the sign-in form."""
        page = self.open("/signin")
        page.fill("input[name=token]", token)
        page.click("form#signin button[type=submit]")
        page.wait_for_url(self.base_url + "/", timeout=15_000)

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot as a test artifact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser: Any, web_gateway: Gateway) -> Iterator[Tab]:
    """A fresh browser context (own storage) with one tab; fails on any console error."""
    context = browser.new_context(locale="en-US")
    tab = Tab(context.new_page(), web_gateway.url)
    try:
        yield tab
        assert tab.unexpected_errors == [], tab.errors
    finally:
        context.close()
