"""Per-device coverage (ledger/coverage.py), alone and through `patio audit --local --full`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ledger.cli import main
from ledger.coverage import Coverage
from ledger.encoding import canonical_json
from ledger.keys import NamedKey
from ledger.log import Log, Submission, entry_bytes


def entry(device: str, start: str, contract: str = "energy_minute@1") -> bytes:
    payload = {"device_id": device, "seq": 1, "start": start, "period_s": 60, "readings": {}}
    return entry_bytes(
        contract=contract,
        payload_jcs=canonical_json(payload),
        sig="",
        received_at="2026-11-22T11:00:00.000Z",
    )


def test_minutes_gaps_duplicates_and_conflicts_per_device() -> None:
    coverage = Coverage()
    coverage.add(
        [
            entry("a", "2026-11-22T10:00:00Z"),
            entry("a", "2026-11-22T10:04:00Z"),  # after three missing minutes
            entry("a", "2026-11-22T10:01:00Z"),  # out of order is fine
            entry("a", "2026-11-22T10:06:00Z"),
            entry("a", "2026-11-22T10:01:00Z"),  # a duplicate minute (written before the rule)
            entry("b", "2026-11-22T23:59:00Z"),
            entry("b", "2026-11-23T00:00:00Z"),
            entry("c", "2026-11-22T10:00:00Z", contract="patio_save_energy@1"),
            entry("c", "2026-11-22T10:00:00+00:00"),  # not the pinned form: not counted
            b"not json",
        ]
    )
    coverage.add([json.loads(entry("b", "2026-11-23T00:01:00Z"))])  # as the gateway serves it
    a, b, d = coverage.report({"a": {"seq": 2, "minute": 1}, "d": {"seq": 1}})
    assert (a.device_id, a.present, a.expected) == ("a", 4, 7)
    assert (a.first, a.last) == ("2026-11-22T10:00:00Z", "2026-11-22T10:06:00Z")
    assert a.gaps == [
        ("2026-11-22T10:02:00Z", "2026-11-22T10:03:00Z"),
        ("2026-11-22T10:05:00Z", "2026-11-22T10:05:00Z"),
    ]
    assert a.duplicates == {"2026-11-22T10:01:00Z": 2}
    assert a.conflicts == {"seq": 2, "minute": 1}
    assert a.line() == (
        "  device a: 4/7 minutes (57.1%) from 2026-11-22T10:00:00Z to 2026-11-22T10:06:00Z, "
        "2 gap(s) [2026-11-22T10:02:00Z..2026-11-22T10:03:00Z, 2026-11-22T10:05:00Z], "
        "1 duplicate minute(s) [2026-11-22T10:01:00Z x2], 3 conflict(s) kept (minute 1, seq 2)"
    )
    assert (b.present, b.expected, b.gaps, b.conflicts) == (3, 3, [], {})
    assert (d.present, d.expected, d.first, d.conflicts) == (0, 0, None, {"seq": 1})
    assert Coverage().report(None) == []


def test_without_a_conflict_source_the_line_says_so() -> None:
    coverage = Coverage()
    coverage.add([entry("a", "2026-11-22T10:00:00Z")])
    [a] = coverage.report(None)
    assert a.conflicts is None and a.line().endswith("conflicts not visible from this source")
    assert a.to_json()["gaps"] == []


def aggregate(key: NamedKey, seq: int, minute: int, *, slot: bool = True) -> Submission:
    start = f"2026-11-22T10:{minute:02d}:00Z"
    payload = {"device_id": key.name, "seq": seq, "start": start, "period_s": 60,
               "readings": {"m": {"unit": "Wh", "sum": float(seq)}}}  # fmt: skip
    return Submission(
        contract="energy_minute@1",
        payload=payload,
        sig=key.sign_payload(payload),
        device_id=key.name,
        seq=seq,
        minute=start if slot else None,  # None: as a log written before the rule
    )


def test_cli_audit_reports_coverage(tmp_path: Path, capsys: Any) -> None:
    log_key, device = NamedKey.generate("example.org/coverage"), NamedKey.generate("boiler-1")
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    log = Log.open(url=url, signer=log_key)
    log.append([aggregate(device, seq, minute) for seq, minute in [(1, 0), (2, 1), (3, 5)]])
    log.append([aggregate(device, 4, 1, slot=False)])  # a duplicate minute from before
    log.append([aggregate(device, 3, 9), aggregate(device, 5, 5)])  # two conflicts kept
    log.seal()
    keys = tmp_path / "devices.json"
    keys.write_text(json.dumps({device.name: device.public_key_b64}))
    report = tmp_path / "report.json"
    argv = ["audit", "--local", "--database-url", url, "--log-key", log_key.verifier_key]
    assert main([*argv, "--device-keys", str(keys), "--full", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert (
        "  device boiler-1: 3/6 minutes (50.0%) from 2026-11-22T10:00:00Z to "
        "2026-11-22T10:05:00Z, 1 gap(s) [2026-11-22T10:02:00Z..2026-11-22T10:04:00Z], "
        "1 duplicate minute(s) [2026-11-22T10:01:00Z x2], 2 conflict(s) kept (minute 1, seq 1)"
    ) in out.splitlines()
    assert "OK: no tampering found" in out
    [saved] = json.loads(report.read_text())["coverage"]
    assert saved["duplicates"] == {"2026-11-22T10:01:00Z": 2}
    assert saved["conflicts"] == {"seq": 1, "minute": 1}


def test_cli_audit_without_full_reads_no_entries(tmp_path: Path, capsys: Any) -> None:
    log_key, device = NamedKey.generate("example.org/coverage"), NamedKey.generate("boiler-1")
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    log = Log.open(url=url, signer=log_key)
    log.append([aggregate(device, 1, 0)])
    log.seal()
    assert main(["audit", "--local", "--database-url", url, "--log-key", log_key.verifier_key]) == 0
    assert "device boiler-1" not in capsys.readouterr().out
