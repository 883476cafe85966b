"""docs/retention.md run as written after the README's first session."""

from __future__ import annotations

from pathlib import Path

from tests.docs.test_guides import run_after_first_session


def test_the_retention_guide(tmp_path: Path) -> None:
    out, err = run_after_first_session(tmp_path, "docs/retention.md", "retention")
    assert '"payload_days":30' in out.replace(" ", "")
    assert "hoa-1: 0 payload(s) dropped" in out
    assert '"dropped":1' in out.replace(" ", "")
    assert '"entry":null' in out.replace(" ", "") and '"reason":"erasure"' in out.replace(" ", "")
    assert "PAYLOAD REMOVED: under erasure (c274b5" in out
    assert "patio: FAILED payload: the payload was removed" in err and "exit 1" in out
    assert "1 entries with payloads removed" in out and "OK: no tampering found" in out
