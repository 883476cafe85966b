"""The demo's start-up: `make run`, timed to the first live reading on the overview, on a
checkout with `.venv` installed and on a fresh clone.

    .venv/bin/python -m bench.demo [--fresh-clone]

Copies the repository's files to a temporary folder with `.venv` shared (an installed
checkout; `var/demo` is new), or with `--fresh-clone` `git clone`s the committed branch and
runs `make .venv/.installed` there first (timed: it counts). Headless chromium
(/usr/bin/chromium) is started first; then `make run` on a free port, timed from its start:

- the dashboard URL and read key printed;
- the overview (opened as soon as the URL is printed, signed in with the read key) showing
  a device card that is not stale (the history's newest minutes arrive first);
- the overview showing the first reading of a live agent (a card whose minute is at or
  after the first minute the live agents sign, which the demo prints), then every device's;
- the demo saying "live now" (every device's live minute in the API) and the 30 days
  back-filled.

Then SIGINT stops it; the CPU time of the whole process tree (make, the demo, the gateway,
writer, agents and back-fill) and the load average are printed, since on a shared machine
the wall time says more about the neighbours than about the demo.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.docs.fenced import free_port, fresh_clone, session_env  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
COMMUNITY = "demo-hoa"
# The overview's device cards: how many, how many not stale, how many at or after `first`.
CARDS = """(first) => {
  const cards = [...document.querySelectorAll(".card")];
  return {
    cards: cards.length,
    fresh: cards.filter((card) => !card.classList.contains("stale")).length,
    live: cards.filter((card) => new Date(card.dataset.start) >= new Date(first)).length,
  };
}"""
LIMIT_S = 900.0  # a hung demo on a loaded machine, not a speed expectation


class Lines:
    """The demo's standard output, each line with the time it arrived."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self.changed:
                self.seen.append((time.monotonic(), line))
                self.changed.notify_all()

    def wait_for(self, pattern: str) -> tuple[float, re.Match[str]]:
        """When the first line matching `pattern` arrived, and the match."""
        with self.changed:
            while True:
                for at, line in self.seen:
                    if found := re.search(pattern, line):
                        return at, found
                if not self.changed.wait(LIMIT_S):
                    raise SystemExit(f"the demo never printed {pattern!r}")


def checkout(folder: Path, fresh: bool) -> tuple[Path, float | None]:
    """An installed checkout (tracked files, `.venv` shared), or a `git clone` with its own
    `make .venv/.installed`; the install's wall time."""
    if not fresh:
        return fresh_clone(folder / "patio"), None
    began = time.monotonic()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(folder / "patio")], check=True)
    done = subprocess.run(["make", ".venv/.installed"], cwd=folder / "patio",
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"make .venv/.installed failed:\n{done.stdout}{done.stderr}")
    return folder / "patio", time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-clone", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()[0]
    port = free_port()
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        clone_began = time.monotonic()
        clone, install = checkout(Path(folder), args.fresh_clone)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the install's CPU is not the demo's
        began = time.monotonic()
        demo = subprocess.Popen(
            ["make", "run"], cwd=clone, env=session_env(PORT=str(port)),
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert demo.stdout is not None
        lines = Lines(demo.stdout)
        marks: dict[str, float] = {}
        try:
            marks["url"], _ = lines.wait_for(r"dashboard\s+http")
            _, key = lines.wait_for(r"read key\s+(papp_\S+)")
            _, first = lines.wait_for(r"live agents started, from minute (\S+);")
            context = browser.new_context()
            context.add_init_script(f"sessionStorage.setItem('patio.token', {key.group(1)!r})")
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/?community={COMMUNITY}")
            devices = None
            while devices is None or "all live" not in marks:
                now = time.monotonic()
                if now - began > LIMIT_S:
                    raise SystemExit("the overview never showed every device live")
                cards = page.evaluate(CARDS, first.group(1))
                if cards["fresh"]:
                    marks.setdefault("fresh", now)
                if cards["live"]:
                    marks.setdefault("first live", now)
                if cards["cards"] and cards["live"] == cards["cards"]:
                    devices = cards["cards"]
                    marks.setdefault("all live", now)
                time.sleep(0.1)
            context.close()
            marks["live now"], _ = lines.wait_for(r"live now")
            marks["history"], _ = lines.wait_for(r"back-filled \d+ days")
        finally:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C at the terminal
            demo.wait(60)
        # Before the browser closes: its CPU would be added once its driver process exits.
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        browser.close()
    print(f"make run on {'a fresh clone' if args.fresh_clone else 'an installed checkout'}, "
          f"{devices} devices, headless chromium {browser.version}")  # fmt: skip
    if install is not None:
        print(f"git clone and make .venv/.installed: {install:.1f} s")
    for name, what in (
        ("url", "dashboard URL and read key printed"),
        ("fresh", "overview shows a reading (not stale)"),
        ("first live", "overview shows a live agent's reading"),
        ("all live", "overview shows every device's live reading"),
        ("live now", 'the demo says "live now"'),
        ("history", "30 days back-filled"),
    ):
        cloned = "" if install is None else f" ({marks[name] - clone_began:.1f} s from the clone)"
        print(f"  {what}: {marks[name] - began:.1f} s after make run{cloned}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    print(f"CPU of the whole tree: {user + system:.0f} s (user {user:.0f}, sys {system:.0f}) "
          f"on {os.cpu_count()} cores")  # fmt: skip
    print(f"load average at the start {load_before:.1f}, at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
