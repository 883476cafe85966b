"""docs/operations.md's backup and restore session, after the README's first session."""

from __future__ import annotations

from pathlib import Path

from tests.docs.test_guides import run_after_first_session


def test_the_operations_guide_backs_up_restores_audits_and_serves(tmp_path: Path) -> None:
    out, _ = run_after_first_session(tmp_path, "docs/operations.md", "operations")
    lines = out.splitlines()
    assert lines.count("current") == 1
    assert "backed up to var/backup.sqlite3" in lines
    assert "restored from var/backup.sqlite3" in lines
    assert "OK: no tampering found" in out
    assert '{"status":"ready","tree_size":3}' in out  # the restored log, served
    assert 'patio_submissions_total{contract="energy_minute@1",status="accepted"} 1.0' in lines
