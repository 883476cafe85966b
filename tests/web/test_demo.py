"""`make run` on a fresh clone: the demo's gateway and simulated community, its 30 days of
history in the reports, live readings on the dashboard in a real browser, and a stop by
Ctrl-C, SIGTERM or a kill -9 that leaves no process behind."""

from __future__ import annotations

import itertools
import os
import re
import signal
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import COMMUNITY, DEVICES, LIVE_WITHIN
from tests.docs.fenced import (
    bash,
    free_port,
    fresh_clone,
    processes_in,
    session_env,
    wait_until_none_in,
)
from tests.web.conftest import Tab

DEMO_TIMEOUT = 900  # a limit for a hung demo on a loaded machine, not a speed expectation


def read_until(stream: Any, pattern: str) -> tuple[re.Match[str], str]:
    """Lines of `stream` until one matches; the match and everything read."""
    seen = ""
    for line in stream:
        seen += line
        if found := re.search(pattern, line):
            return found, seen
    raise AssertionError(f"the demo ended before {pattern!r}:\n{seen}")


def is_demo(pid: int) -> bool:
    """Whether the process is `patio demo` (make exec'd it)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.endswith(b"/patio") and b == b"demo" for a, b in itertools.pairwise(args))


def test_make_run_shows_a_live_community_with_30_days_of_reports(
    tmp_path: Path, browser: Any
) -> None:
    clone = fresh_clone(tmp_path / "patio")
    port = free_port()
    with bash("make run\n", cwd=clone, env=session_env(PORT=str(port))) as shell:
        assert shell.stdout is not None
        banner, said = read_until(shell.stdout, r"read key\s+(papp_\S+)")
        key = banner.group(1)
        assert f"dashboard    http://127.0.0.1:{port}/?community={COMMUNITY['id']}" in said
        read_until(shell.stdout, r"live now")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as client:
            latest = client.get(f"/v1/communities/{COMMUNITY['id']}/latest").json()
            now = datetime.now(UTC)
            newest = {
                d["device_id"]: datetime.fromisoformat(d["start"].replace("Z", "+00:00"))
                for d in latest["devices"]
            }
            assert set(newest) == {device.id for device in DEVICES}
            assert min(newest.values()) >= now - LIVE_WITHIN - timedelta(minutes=1)
            # Each sensor's energy counts once: its Wh counter (the W gauge is declared other).
            minute_w = {
                d["device_id"]: sum(
                    r["sum"] * 60 for name, r in d["readings"].items() if name.endswith("_wh")
                )
                for d in latest["devices"]
            }
            power = latest["power"]
            assert power["generation_w"] == pytest.approx(minute_w["solar-roof"])
            flats = sum(w for device, w in minute_w.items() if device.startswith("flat-"))
            assert power["consumption_w"] == pytest.approx(flats) and flats > 0
            # Every day of the last 30 has energy in the community's report, and costs.
            today = now.date()
            report = client.get(
                "/v1/reports",
                params={
                    "community": COMMUNITY["id"],
                    "from": (today - timedelta(days=29)).isoformat(),
                    "to": today.isoformat(),
                },
            )
            assert report.status_code == 200, report.text
            days = report.json()["buckets"]
            assert len(days) == 30
            assert all(float(day["consumed_kWh"]) > 0 for day in days), days
            assert sum(float(day["generated_kWh"]) for day in days) > 0
            assert all(day["cost"] is not None for day in days)
            month = client.get(
                "/v1/reports",
                params={"community": COMMUNITY["id"], "period": "month",
                        "date": (today - timedelta(days=20)).isoformat()},
            )  # fmt: skip
            assert month.status_code == 200 and float(month.json()["total"]["consumed_kWh"]) > 0

        context = browser.new_context(locale="en-US")
        tab = Tab(context.new_page(), f"http://127.0.0.1:{port}")
        try:
            tab.sign_in(key)
            page = tab.open(f"/?community={COMMUNITY['id']}")
            page.wait_for_selector("#live[data-state='live']", timeout=30_000)
            assert page.locator(".card").count() == len(DEVICES)
            assert page.locator(".card.stale").count() == 0
            tab.screenshot("demo-overview")
            day = (date.today() - timedelta(days=1)).isoformat()
            page = tab.open(f"/reports?community={COMMUNITY['id']}&period=day&date={day}")
            page.wait_for_selector(f"body[data-report='{COMMUNITY['id']}/day/{day}']")
            assert float(page.get_attribute("#consumed", "data-value") or 0) > 0
            tab.screenshot("demo-reports")
            assert tab.unexpected_errors == [], tab.errors
        finally:
            context.close()

        # Ctrl-C at the terminal: SIGINT to the whole foreground process group.
        os.killpg(shell.pid, signal.SIGINT)
        out, err = shell.communicate(timeout=60)
    assert "demo stopped" in out, out + err
    assert "Traceback" not in err, err
    assert wait_until_none_in(clone) == []


@pytest.mark.parametrize("how", ["sigterm-to-make", "sigkill-to-demo"])
def test_stopping_make_run_leaves_no_process_behind(tmp_path: Path, how: str) -> None:
    """Stopped while it back-fills: a kill of make (SIGTERM), or a kill -9 of the demo
    itself (its children get SIGTERM from the kernel, PR_SET_PDEATHSIG)."""
    clone = fresh_clone(tmp_path / "patio")
    with bash("exec make run\n", cwd=clone, env=session_env(PORT=str(free_port()))) as shell:
        assert shell.stdout is not None
        read_until(shell.stdout, r"back-filling \d+ days")
        started = processes_in(clone)
        assert len(started) >= 1 + 2 + len(DEVICES)  # the demo, gateway + writer, back-fills
        if how == "sigterm-to-make":
            os.kill(shell.pid, signal.SIGTERM)  # bash exec'd make: this is make
        else:
            [demo] = [pid for pid in started if is_demo(pid)]
            os.kill(demo, signal.SIGKILL)
        shell.wait(timeout=60)
    assert wait_until_none_in(clone) == []
