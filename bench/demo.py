"""The demo's start-up: `patio demo` (what `make run` runs) on a fresh data dir, timed.

    .venv/bin/python -m bench.demo

Starts the demo on a free port, times from the start to the printed dashboard URL and to
"live now" (every device's 30 days back-filled through POST /v1/entries and its live agent
running), counts the log's entries, stops it with SIGINT, and reports the CPU time of the
whole process tree (gateway, writer, back-fills, agents) and the machine's load average,
since on a shared machine the wall time says more about the neighbours than the demo.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as data_dir:
        began = time.monotonic()
        demo = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "demo", "--port", str(port),
             "--data-dir", str(Path(data_dir) / "demo")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert demo.stdout is not None
        marks: dict[str, float] = {}
        for line in demo.stdout:
            if "dashboard" in line:
                marks["url"] = time.monotonic() - began
            if "live now" in line:
                marks["live"] = time.monotonic() - began
                break
        size = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["tree_size"]
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"dashboard URL printed after {marks['url']:.1f} s")
    print(f"live, 30 days back-filled, after {marks['live']:.0f} s ({size:,} entries sealed)")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"CPU of the whole tree: {cpu:.0f} s (user {usage.ru_utime:.0f}, "
          f"sys {usage.ru_stime:.0f}) on {os.cpu_count()} cores")  # fmt: skip
    print(f"load average at the start {load_before:.1f}, at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
