"""Dashboard benchmark: the overview's first load and the delay from a commit to the live view.

    .venv/bin/python -m bench.web [--devices 12] [--minutes 60] [--loads 10] [--commits 40]

A real gateway (`patio gateway serve`, SQLite) holds one community of `--devices` devices,
each with `--minutes` signed minute aggregates of today. Headless chromium
(/usr/bin/chromium, Playwright) then opens the overview `--loads` times, each in a fresh
context (empty cache), over loopback, and reports the bytes transferred (every response of
the page load: HTML, CSS, scripts, JSON; the open event stream excluded) and the time from
navigation start to the first render of power and device cards (`performance.mark
("first-render")`) and to today's self-sufficiency (`"today-loaded"`, from today's day
report). Last, with the
overview open and live, it submits `--commits` aggregates one at a time and measures from
the moment the gateway acknowledged each (after its commit) to the moment its device card
showed the new entry (a MutationObserver in the page; same machine, same clock).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ledger.keys import NamedKey  # noqa: E402
from tests.gateway.server import Gateway, start_gateway  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
COMMUNITY = "bench-hoa"
# Records when each device card first shows a log tag id, on the page's clock.
WATCH_CARDS = """
window.__shown = {};
new MutationObserver(() => {
  for (const card of document.querySelectorAll(".card[data-log-tag]")) {
    window.__shown[card.dataset.logTag] ??= performance.timeOrigin + performance.now();
  }
}).observe(document, { subtree: true, childList: true, attributes: true });
"""
# Sizes of everything the page load fetched, as the browser counted them on the wire.
TRANSFERRED = """() => {
  const [nav] = performance.getEntriesByType("navigation");
  const resources = performance
    .getEntriesByType("resource")
    .filter((r) => !r.name.includes("/v1/stream"));
  return {
    bytes: nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0),
    // Before the first render: the page, its assets and the reads of power and devices.
    bytes_first: nav.transferSize + resources
      .filter((r) => r.responseEnd <= performance.getEntriesByName("first-render")[0].startTime)
      .reduce((n, r) => n + r.transferSize, 0),
    today_bytes: resources
      .filter((r) => r.name.includes("/v1/reports"))
      .reduce((n, r) => n + r.transferSize, 0),
    requests: 1 + resources.length,
    first_render: performance.getEntriesByName("first-render")[0].startTime,
    today: performance.getEntriesByName("today-loaded")[0].startTime,
  };
}"""


# What payload()'s readings measure, declared as the registry asks (the overview sums by role).
PROFILE = {
    "profile": {
        "sensors": {
            "solar_pv": {"role": "generation", "unit": "W"},
            "load": {"role": "consumption", "unit": "W"},
            "grid_in": {"role": "grid_import", "unit": "W"},
        }
    }
}


def payload(device: str, seq: int, start: datetime) -> dict[str, Any]:
    """A minute aggregate with generation, consumption and grid import readings."""
    return {
        "device_id": device,
        "seq": seq,
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period_s": 60,
        "readings": {
            "solar_pv": {
                "unit": "W",
                "n": 12,
                "missing": 0,
                "avg": 900.0 + seq,
                "min": 800.0,
                "max": 1000.0 + seq,
            },
            "load": {"unit": "W", "n": 12, "missing": 0, "avg": 700.0, "min": 500.0, "max": 950.0},
            # What the load draws beyond the solar output (none: the day is self-sufficient).
            "grid_in": {"unit": "W", "n": 12, "missing": 0, "avg": 0.0, "min": 0.0, "max": 0.0},
        },
    }


def fill(
    gateway: Gateway, devices: int, minutes: int, room: int
) -> dict[str, tuple[NamedKey, int]]:
    """Register the devices and submit `minutes` aggregates each, ending `room` minutes ago
    (aggregates may not start in the future: the live part fills that room)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    midnight = now.replace(hour=0, minute=0)
    minutes = min(minutes, int((now - midnight).total_seconds() // 60) - room - 1)
    keys: dict[str, tuple[NamedKey, int]] = {}
    with gateway.client() as client:
        for number in range(devices):
            device = f"meter-{number:02d}"
            key = gateway.device(device, COMMUNITY)
            gateway.admin.post(f"/v1/devices/{device}/profile", json=PROFILE).raise_for_status()
            envelopes = []
            for seq in range(1, minutes + 1):
                body = payload(device, seq, now - timedelta(minutes=minutes + room - seq + 1))
                envelopes.append({"payload": body, "sig": key.sign_payload(body)})
            reply = client.post(
                "/v1/entries", json={"contract": "energy_minute", "envelopes": envelopes}
            )
            reply.raise_for_status()
            keys[device] = (key, minutes)
    gateway.seal()
    return keys


def first_loads(browser: Any, gateway: Gateway, token: str, loads: int) -> list[dict[str, float]]:
    """Open the overview `loads` times in fresh contexts; the figures of each load."""
    figures = []
    for _ in range(loads):
        context = browser.new_context()
        context.add_init_script(f"sessionStorage.setItem('patio.token', {token!r})")
        page = context.new_page()
        page.goto(f"{gateway.url}/?community={COMMUNITY}")
        page.wait_for_function(
            "() => performance.getEntriesByName('today-loaded').length > 0", timeout=60_000
        )
        figures.append(page.evaluate(TRANSFERRED))
        context.close()
    return figures


def live_delays(
    browser: Any, gateway: Gateway, token: str, keys: dict[str, tuple[NamedKey, int]], commits: int
) -> list[float]:
    """Milliseconds from each acknowledged commit to its card on the open overview."""
    context = browser.new_context()
    context.add_init_script(f"sessionStorage.setItem('patio.token', {token!r})")
    context.add_init_script(WATCH_CARDS)
    page = context.new_page()
    page.goto(f"{gateway.url}/?community={COMMUNITY}")
    page.wait_for_selector("#live[data-state='live']", timeout=60_000)
    delays = []
    device = next(iter(keys))
    key, seq = keys[device]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with gateway.client() as client:
        for step in range(commits):
            seq += 1
            # Minutes after the newest one, so each becomes the device's latest reading.
            body = payload(device, seq, now - timedelta(minutes=commits - step))
            reply = client.post(
                "/v1/entries",
                json={
                    "contract": "energy_minute",
                    "envelopes": [{"payload": body, "sig": key.sign_payload(body)}],
                },
            )
            acknowledged = time.time() * 1000
            [result] = reply.json()["results"]
            assert result["status"] == "accepted", result
            tag = result["log_tag_id"]
            page.wait_for_function(
                "(tag) => window.__shown[tag] !== undefined", arg=tag, timeout=30_000
            )
            delays.append(page.evaluate("(tag) => window.__shown[tag]", tag) - acknowledged)
    context.close()
    return delays


def spread(values: list[float], unit: str, digits: int = 0) -> str:
    """Median and range."""
    ordered = sorted(values)
    return (
        f"median {statistics.median(ordered):.{digits}f} {unit} "
        f"(min {ordered[0]:.{digits}f}, max {ordered[-1]:.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=12)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--commits", type=int, default=40)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as data_dir:
        gateway = start_gateway(Path(data_dir))
        try:
            keys = fill(gateway, args.devices, args.minutes, room=args.commits)
            token = gateway.app_key(f"read:{COMMUNITY}")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                loads = first_loads(browser, gateway, token, args.loads)
                delays = live_delays(browser, gateway, token, keys, args.commits)
                version = browser.version
                browser.close()
        finally:
            gateway.stop()
    entries = sum(minutes for _, minutes in keys.values())
    kib = [f["bytes"] / 1024 for f in loads]
    p90 = sorted(delays)[int(0.9 * len(delays))]
    print(f"chromium {version}, {args.devices} devices, {entries} entries today")
    print(f"overview first load ({args.loads} cold loads, loopback):")
    print(f"  bytes transferred: {spread(kib, 'KiB', 1)}, {loads[0]['requests']:.0f} requests")
    print(
        f"    before the first render: {spread([f['bytes_first'] / 1024 for f in loads], 'KiB', 1)}"
    )
    print(f"    today's report: {spread([f['today_bytes'] / 1024 for f in loads], 'KiB', 1)}")
    print(f"  to first render: {spread([f['first_render'] for f in loads], 'ms')}")
    print(f"  to today's self-sufficiency: {spread([f['today'] for f in loads], 'ms')}")
    print(f"commit acknowledged -> live view ({len(delays)} commits): {spread(delays, 'ms')}")
    print(f"  p90 {p90:.0f} ms")


if __name__ == "__main__":
    main()
