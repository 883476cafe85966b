"""docs/alerts.md: every shell block is marked `<!-- test: NAME -->` and runs here, verbatim,
in bash (the convention of tests/docs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.gateway.server import start_gateway

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "alerts.md"
MARK = re.compile(r"^<!-- test: ([a-z0-9-]+) -->$")


def blocks() -> list[tuple[str | None, str, str]]:
    """(session, language, text) of each fenced block, in order."""
    found: list[tuple[str | None, str, str]] = []
    lines = DOC.read_text().splitlines()
    session: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if mark := MARK.match(line):
            session = mark.group(1)
        elif line.startswith("```"):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
            text = "\n".join(lines[index + 1 : end]) + "\n"
            found.append((session, line[3:], text))
            session, index = None, end
        elif line:
            session = None
        index += 1
    return found


def session(name: str) -> str:
    texts = [text for mark, _, text in blocks() if mark == name]
    assert texts, f"no block marked {name}"
    return "set -euo pipefail\n" + "".join(texts)


def run(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_every_shell_block_is_marked() -> None:
    unmarked = [text for mark, language, text in blocks() if language == "sh" and mark is None]
    assert unmarked == []


def test_the_cli_session_runs(tmp_path: Path) -> None:
    server = start_gateway(tmp_path)
    try:
        server.community("hoa-1")
        env = {
            **server.env,
            "PATIO_GATEWAY_URL": server.url,
            "PATIO_ADMIN_TOKEN": server.admin_token,
        }
        done = run(session("alerts"), cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert '"name": "boiler stopped"' in done.stdout
        assert "\n1\n" in done.stdout  # one boiler rule listed
        assert '"deliveries": []' in done.stdout
    finally:
        server.stop()


def test_the_bench_commands_run() -> None:
    env = {**os.environ, "DURATION": "1", "MINUTES": "2"}
    done = run(session("alerts-bench"), cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert "alert rules 0" in done.stdout and "alert rules 4" in done.stdout
    assert "alert evaluator:" in done.stdout
    assert "alert evaluator, 4 rules over 100 devices, sqlite: 200 entries" in done.stdout
