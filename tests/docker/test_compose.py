"""The compose stack on a real Docker engine: `make docker-test`, as docs/operations.md shows it.

Skips with the reason when the engine or its tools are missing; fails instead when
PATIO_REQUIRE_SERVICES=1 (CI, where `.ci/run` installs and starts them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docs.fenced import REPO, bash, session, session_env

SESSION_TIMEOUT = 3600  # a limit for a hung build, not a speed expectation


def require_docker() -> None:
    """Skip (or fail in CI) unless a Docker engine answers and the tools are installed."""
    missing = [
        tool for tool in ("docker", "docker-compose", "debootstrap") if not shutil.which(tool)
    ]
    reason = f"{', '.join(missing)} not installed" if missing else None
    if reason is None:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
        if info.returncode != 0:
            reason = f"no Docker engine answers: {info.stderr.strip().splitlines()[-1:]}"
    if reason is None:
        return
    if os.environ.get("PATIO_REQUIRE_SERVICES") == "1":
        log = Path("/var/log/dockerd.log")  # where .ci/run starts the engine
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        pytest.fail(f"{reason}; PATIO_REQUIRE_SERVICES=1 demands it; dockerd's log ends: {tail}")
    pytest.skip(reason)


@pytest.mark.slow
@pytest.mark.timeout(SESSION_TIMEOUT)
def test_the_compose_stack_end_to_end() -> None:
    require_docker()
    with bash(
        session(REPO / "docs" / "operations.md", "docker"), cwd=REPO, env=session_env()
    ) as shell:
        out, err = shell.communicate(timeout=SESSION_TIMEOUT)
    assert shell.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "20 entries accepted through the proxy, each seen on the event stream" in out
    assert "killed gateway-1 (SIGKILL)" in out
    assert "50 entries accepted through the proxy after the kill" in out
    assert out.count("OK: entry ") == 2  # patio verify, before and after the kill
    assert "OK: no tampering found" in out
    for n in (1, 2, 3):
        assert f"edge-{n}: " in out and "entries acknowledged" in out
    assert "docker-test: OK" in out
