"""The reports page in a real browser, against a gateway with real signed submissions: the
numbers GET /v1/reports answers, previous and next, the CSV and JSON downloads, and the
"verify this report" command, run as shown."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from tests.gateway.server import Gateway
from tests.web.conftest import PHONE, Tab
from tests.web.test_browser import declare, submit

PATIO = Path(sys.executable).parent / "patio"


def shown(value: str) -> str:
    """A kWh figure as the page writes it in en-US: at most 2 decimals, no trailing zeros."""
    return f"{float(value):,.2f}".rstrip("0").rstrip(".") + " kWh"


def community_with_readings(gateway: Gateway, community: str) -> str:
    """Two devices with declared roles, five signed minutes each, a tariff, sealed; the
    UTC date of the minutes (the community's time zone is UTC)."""
    keys = {
        device: gateway.device(device, community)
        for device in (f"{community}-roof", f"{community}-flat")
    }
    for device in keys:
        declare(gateway, device)
    document = json.loads(
        (resources.files("contracts.energy") / "tariffs" / "es-2.0td.json").read_text()
    )
    gateway.admin.put(
        f"/v1/communities/{community}/tariff",
        json={"tariff": document, "contracted_kW": {"P1": "4.6", "P2": "4.6"}},
    ).raise_for_status()
    for device, key in keys.items():
        for seq, ago in enumerate(range(6, 1, -1), start=1):
            submit(gateway, key, device, seq, ago=ago)
    gateway.seal()
    return (datetime.now(UTC) - timedelta(minutes=4)).strftime("%Y-%m-%d")


def api_report(gateway: Gateway, community: str, period: str, day: str) -> dict[str, Any]:
    reply = gateway.admin.get(
        "/v1/reports", params={"community": community, "period": period, "date": day}
    )
    reply.raise_for_status()
    report: dict[str, Any] = reply.json()
    return report


def open_report(tab: Tab, community: str, period: str, day: str) -> Any:
    page = tab.open(f"/reports?community={community}&period={period}&date={day}")
    page.wait_for_selector(f"body[data-report='{community}/{period}/{day}']")
    return page


def test_the_reports_page_shows_what_the_api_answers(
    tab: Tab, web_gateway: Gateway, tmp_path: Path
) -> None:
    day = community_with_readings(web_gateway, "rep-hoa")
    tab.sign_in(web_gateway.admin_token)
    page = open_report(tab, "rep-hoa", "day", day)
    report = api_report(web_gateway, "rep-hoa", "day", day)
    total = report["total"]
    assert float(total["generated_kWh"]) > 0 and float(total["consumed_kWh"]) > 0
    for field, selector in (("generated_kWh", "#generated"), ("consumed_kWh", "#consumed")):
        assert page.get_attribute(selector, "data-value") == total[field]
        assert page.inner_text(selector) == shown(total[field])
    assert page.get_attribute("#cost", "data-value") == total["cost"]["total"]
    assert "€" in page.inner_text("#cost")
    for device in report["devices"]:
        row = f"#devices tr[data-device='{device['device_id']}']"
        for field in ("generated_kWh", "consumed_kWh"):
            cell = page.get_attribute(f"{row} td[data-field='{field}']", "data-value")
            assert cell == device["total"][field]
    assert page.locator("#comparison tbody tr").count() == 6
    assert page.locator("#chart-energy canvas").count() == 1
    assert page.inner_text("#tree-size") == f"{report['provenance']['tree_size']:,}"
    assert page.inner_text("#root") == report["provenance"]["root_hash"]
    tab.screenshot("desktop-reports")

    # CSV: the same rows the API writes for this report.
    with page.expect_download() as csv_download:
        page.click("#csv")
    csv_text = Path(csv_download.value.path()).read_text()
    lines = csv_text.splitlines()
    assert lines[0].startswith("row,start,end,generated_kWh")
    assert len(lines) == len(report["buckets"]) + 2
    assert lines[-1].split(",")[3] == total["generated_kWh"]

    # The JSON and the command beside it: run verbatim, it verifies against the log.
    with page.expect_download() as json_download:
        page.click("#json")
    saved = tmp_path / json_download.value.suggested_filename
    json_download.value.save_as(saved)
    command = page.inner_text("#command")
    assert command.startswith(f"patio report verify {saved.name} --log-key ")
    env = {**os.environ, "PATIO_API_KEY": web_gateway.app_key("audit")}
    done = subprocess.run(
        [str(PATIO), *shlex.split(command)[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # Previous and next step by the period; the month holds the day's energy.
    page.click("#previous")
    yesterday = (datetime.fromisoformat(day) - timedelta(days=1)).strftime("%Y-%m-%d")
    page.wait_for_selector(f"body[data-report='rep-hoa/day/{yesterday}']")
    assert (
        page.get_attribute("#generated", "data-value")
        == api_report(web_gateway, "rep-hoa", "day", yesterday)["total"]["generated_kWh"]
    )
    page.click("#next")
    page.wait_for_selector(f"body[data-report='rep-hoa/day/{day}']")
    page.check("input[name=period][value=month]")
    page.wait_for_selector(f"body[data-report='rep-hoa/month/{day}']")
    month = api_report(web_gateway, "rep-hoa", "month", day)
    assert page.get_attribute("#generated", "data-value") == month["total"]["generated_kWh"]
    assert page.locator("#comparison tr[data-field='generated_kWh'] td").nth(1).inner_text()


def test_a_reader_of_one_community_gets_its_report_on_a_phone(
    browser: Any, web_gateway: Gateway
) -> None:
    day = community_with_readings(web_gateway, "rep-phone")
    reader = web_gateway.app_key("read:rep-phone")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="es-ES")
    tab = Tab(context.new_page(), web_gateway.url)
    try:
        tab.sign_in(reader)
        page = open_report(tab, "rep-phone", "week", day)
        report = api_report(web_gateway, "rep-phone", "week", day)
        assert page.get_attribute("#generated", "data-value") == report["total"]["generated_kWh"]
        assert page.inner_text("h2#h-verify") == "Verificar este informe"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        tab.screenshot("phone-reports-week")
        assert tab.errors == [], tab.errors
    finally:
        context.close()
