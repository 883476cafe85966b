"""`make run` on a fresh clone: the demo's gateway and simulated community, its 30 days of
history in the reports, live readings on the dashboard in a real browser, and a stop by
Ctrl-C, SIGTERM or a kill -9 that leaves no process behind."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
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
from tests.wait import wait_until
from tests.web.conftest import Tab

DEMO_TIMEOUT = 1200  # a limit for a hung demo on a loaded machine, not a speed expectation
PATIO = Path(sys.executable).parent / "patio"


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


def back_fill_of(clone: Path) -> int:
    """The demo's back-fill process (`python -m gateway.demo back-fill`)."""
    [pid] = [
        pid
        for pid in processes_in(clone)
        if b"gateway.demo\0back-fill" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return pid


def minute_readings(
    client: httpx.Client, since: datetime, until: datetime
) -> dict[str, dict[str, Any]]:
    """{minute: {device: readings}} of the community's minutes in [since, until) (paged)."""
    found: dict[str, dict[str, Any]] = {}
    cursor = -1
    while cursor is not None:
        page = client.get("/v1/entries", params={
            "community": COMMUNITY["id"], "from": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "to": until.strftime("%Y-%m-%dT%H:%M:%SZ"), "limit": 1000, "cursor": cursor,
        }).json()  # fmt: skip
        for item in page["entries"]:
            payload = item["entry"]["payload"]
            found.setdefault(payload["start"], {})[payload["device_id"]] = payload["readings"]
        cursor = page["next_cursor"]
    return found


@pytest.mark.timeout(DEMO_TIMEOUT)
def test_make_run_shows_a_live_community_with_30_days_of_reports(
    tmp_path: Path, browser: Any
) -> None:
    clone = fresh_clone(tmp_path / "patio")
    port = free_port()
    with bash("make run\n", cwd=clone, env=session_env(PORT=str(port))) as shell:
        assert shell.stdout is not None
        banner, said = read_until(shell.stdout, r"live agents started, from minute (\S+);")
        first = datetime.fromisoformat(banner.group(1).replace("Z", "+00:00"))
        key = re.search(r"read key\s+(papp_\S+)", said).group(1)  # type: ignore[union-attr]
        assert f"dashboard    http://127.0.0.1:{port}/?community={COMMUNITY['id']}" in said
        # The history waits (SIGSTOP) while the live agents go on: the overview shows every
        # device's live minute, and the oldest day is still empty.
        back_fill = back_fill_of(clone)
        os.kill(back_fill, signal.SIGSTOP)
        context = browser.new_context(locale="en-US")
        tab = Tab(context.new_page(), f"http://127.0.0.1:{port}")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        try:
            tab.sign_in(key)
            page = tab.open(f"/?community={COMMUNITY['id']}")
            page.wait_for_function(
                """([devices, first]) => {
                  const cards = [...document.querySelectorAll(".card")];
                  return cards.length === devices
                    && cards.every((card) => new Date(card.dataset.start) >= new Date(first));
                }""",
                arg=[len(DEVICES), first.isoformat()],
                timeout=180_000,
            )
            assert page.locator(".card.stale").count() == 0
            tab.screenshot("demo-overview-live-while-back-filling")
            assert Path(f"/proc/{back_fill}").exists()  # stopped, not finished
            oldest = (datetime.now(UTC).date() - timedelta(days=29)).isoformat()
            params = {"community": COMMUNITY["id"], "period": "day", "date": oldest}
            report = client.get("/v1/reports", params=params)
            assert report.status_code == 200, report.text
            assert float(report.json()["total"]["consumed_kWh"]) == 0
            os.kill(back_fill, signal.SIGCONT)
            read_until(shell.stdout, r"back-filled \d+ days of \d+ devices")
            # Reports are computed at the latest checkpoint: wait for one sealed after the
            # back-fill's last batch was acknowledged, so every day it sent is in the report.
            sealed = sealed_size(client)
            wait_until(lambda: sealed_size(client) > sealed, 180, "a seal after the back-fill")

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
                    r["sum"] * 60
                    for name, r in d["readings"].items()
                    if name.endswith("_wh") and not name.startswith("grid")
                )
                for d in latest["devices"]
            }
            power = latest["power"]
            assert power["generation_w"] == pytest.approx(minute_w["solar-roof"])
            flats = sum(w for device, w in minute_w.items() if device.startswith("flat-"))
            assert power["consumption_w"] == pytest.approx(flats) and flats > 0

            # The grid meter nets the solar array and the flats minute by minute: in the
            # history (one sample a minute), import = max(0, consumed - generated) and
            # export the opposite, to the readings' 4 decimals.
            history = minute_readings(client, first - timedelta(hours=1), first)
            assert len(history) == 60 and all(len(r) == len(DEVICES) for r in history.values())
            for readings in history.values():
                generated = readings["solar-roof"]["solar_wh"]["sum"]
                consumed = sum(readings[d]["house_wh"]["sum"] for d in readings if "flat" in d)
                grid = readings["grid-meter"]
                drawn = consumed - generated
                assert grid["grid_import_wh"]["sum"] == pytest.approx(max(0, drawn), abs=1e-3)
                assert grid["grid_export_wh"]["sum"] == pytest.approx(max(0, -drawn), abs=1e-3)

            # Every day of the last 30 has energy in the community's report, costs, and a
            # net and self-sufficiency that follow from the grid meter.
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
            for day in days[:-1]:  # whole days of history (today has live minutes)
                generated, consumed = float(day["generated_kWh"]), float(day["consumed_kWh"])
                assert float(day["net_kWh"]) == pytest.approx(consumed - generated, abs=1e-3)
                imported = float(day["grid_import_kWh"])
                assert float(day["self_sufficiency"]["ratio"]) == pytest.approx(
                    1 - imported / consumed, abs=1e-4
                )
                assert day["self_consumption"]["ratio"] is not None or generated == 0
            month = client.get(
                "/v1/reports",
                params={"community": COMMUNITY["id"], "period": "month",
                        "date": (today - timedelta(days=20)).isoformat()},
            )  # fmt: skip
            assert month.status_code == 200 and float(month.json()["total"]["consumed_kWh"]) > 0

            page = tab.open(f"/?community={COMMUNITY['id']}")
            page.wait_for_selector("#live[data-state='live']", timeout=30_000)
            assert page.locator(".card").count() == len(DEVICES)
            assert page.locator(".card.stale").count() == 0
            page.wait_for_selector("#sufficiency[data-value]", timeout=30_000)
            assert re.fullmatch(r"\d+ %", page.inner_text("#sufficiency"))
            tab.screenshot("demo-overview")
            day = (date.today() - timedelta(days=1)).isoformat()
            page = tab.open(f"/reports?community={COMMUNITY['id']}&period=day&date={day}")
            page.wait_for_selector(f"body[data-report='{COMMUNITY['id']}/day/{day}']")
            assert float(page.get_attribute("#consumed", "data-value") or 0) > 0
            tab.screenshot("demo-reports")
            assert tab.unexpected_errors == [], tab.errors
            log_key = client.get("/v1/log-key").text.strip()
        finally:
            client.close()
            context.close()

        # Ctrl-C at the terminal: SIGINT to the whole foreground process group.
        os.killpg(shell.pid, signal.SIGINT)
        out, err = shell.communicate(timeout=60)
    assert "demo stopped" in out, out + err
    assert "Traceback" not in err, err
    assert wait_until_none_in(clone) == []
    # The live agents and the back-fill signed for the same devices at once: the auditor
    # finds every entry valid and no conflict kept (no seq or minute was taken twice).
    audit = subprocess.run(
        [str(PATIO), "audit", "--local", "--dir", str(clone / "var" / "demo" / "gateway"),
         "--log-key", log_key, "--full"],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT, check=False,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    devices = re.findall(r"device (\S+): .* (\d+) conflict\(s\) kept", audit.stdout)
    assert sorted(devices) == sorted((device.id, "0") for device in DEVICES), audit.stdout


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


def sealed_size(client: httpx.Client) -> int:
    """The tree size of the gateway's latest checkpoint (the note's second line)."""
    reply = client.get("/v1/checkpoint")
    assert reply.status_code == 200, reply.text
    return int(reply.text.splitlines()[1])
