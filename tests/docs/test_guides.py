"""Every guide under docs/ run as written: its marked shell blocks after the README's
first session, against the real gateway that session starts, on a fresh clone."""

from __future__ import annotations

from pathlib import Path

from tests.docs.fenced import (
    REPO,
    bash,
    free_port,
    fresh_clone,
    session,
    session_env,
    wait_until_none_in,
)

SESSION_TIMEOUT = 600  # a limit for a hung session, not a speed expectation


def run_after_first_session(tmp_path: Path, doc: str, name: str, **env: str) -> tuple[str, str]:
    """The README's first session, then the doc's session NAME, then the README's stop."""
    clone = fresh_clone(tmp_path / "patio")
    script = (
        session(REPO / "README.md", "first-session")
        + session(REPO / doc, name)
        + session(REPO / "README.md", "stop")
    )
    with bash(script, cwd=clone, env=session_env(PORT=str(free_port()), **env)) as shell:
        out, err = shell.communicate(timeout=SESSION_TIMEOUT)
    assert shell.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert wait_until_none_in(clone) == []
    assert "Traceback" not in err
    return out, err


def test_the_anchoring_walkthrough_on_anvil(tmp_path: Path, anvil_url: str) -> None:
    out, _ = run_after_first_session(tmp_path, "docs/anchoring.md", "anchoring", RPC=anvil_url)
    assert "Anchor contract: 0x" in out
    assert "confirmed: tree size 3 in 0x" in out and "1 confirmation(s), confirmed)" in out
    assert "1 anchor(s) checked on chain" in out


def test_the_auditors_guide(tmp_path: Path) -> None:
    out, err = run_after_first_session(tmp_path, "docs/auditing.md", "auditing")
    lines = out.splitlines()
    assert "exit 0" in lines and "exit 1" in lines and "exit 2" in lines
    assert "patio: FAILED entry hash" in err
    assert out.count("OK: no tampering found") == 3
    assert "tree size 4 (was 3)" in out
    assert "OK: patio-ledger.local/log at size 4 extends size 3" in out


def test_the_legacy_patio_guide(tmp_path: Path) -> None:
    out, _ = run_after_first_session(tmp_path, "docs/legacy-patio.md", "legacy-patio")
    assert '"log_tag":"c274b5' in out.replace(" ", "")
    assert "(HTTP 409)" in out
    assert "'amount': '203.5W'" in out
    assert "is leaf 3 of patio-ledger.local/log" in out


def test_the_http_reference_session(tmp_path: Path) -> None:
    out, _ = run_after_first_session(tmp_path, "docs/http-api.md", "http-api")
    assert "2 c274b5" in out and "2026-11-22T10:15:00Z" in out
    assert '"community_id":"hoa-1"' in out
    assert '"status":403' in out and "(HTTP 403)" in out
    assert '"status":401' in out and "(HTTP 401)" in out
