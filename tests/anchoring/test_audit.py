"""The auditor on a local database: each tamper scenario of issue 5 is detected and named."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger import merkle
from ledger.anchoring import Anchorer
from ledger.audit import (
    Auditor,
    AuditState,
    LocalSource,
    SourceCheckpoint,
    SourceEntry,
)
from ledger.cli import main
from ledger.keys import NamedKey
from ledger.log import Log
from ledger.note import Checkpoint
from tests.anchoring.conftest import ORIGIN, grow
from tests.ledger.helpers import submission


def db_path(log: Log) -> str:
    """The SQLite file behind a log."""
    path = log.engine.url.database
    assert path is not None
    return path


def tamper(log: Log, *statements: tuple[str, Sequence[Any]]) -> None:
    """Change the database behind the gateway's back, triggers dropped first."""
    log.engine.dispose()
    with sqlite3.connect(db_path(log)) as db:
        for trigger in ("entries_no_update", "entries_no_delete", "checkpoints_no_update"):
            db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for sql, params in statements:
            db.execute(sql, params)


def history(log: Log, device: NamedKey, sizes: Sequence[int]) -> None:
    """Grow the log to each size in turn, sealing at each."""
    for size in sizes:
        grow(log, device, size - log.size())


def audit(log: Log, log_key: NamedKey, device: NamedKey, **kw: Any) -> Any:
    """A full local audit with the device's key known."""
    source = LocalSource(log, device_keys={device.name: [device.public_key_b64]})
    auditor = Auditor(source=source, log_key=log_key.verifier_key, **kw.pop("auditor", {}))
    return auditor.run(full=kw.pop("full", True), **kw)


def first_line(result: Any) -> str:
    """The first finding's printed line."""
    assert result.report.findings, "expected a finding"
    line: str = result.report.findings[0].line()
    return line


def test_clean_log_passes_and_counts(log: Log, log_key: NamedKey, device: NamedKey) -> None:
    history(log, device, [5, 12, 13, 40])
    result = audit(log, log_key, device)
    report = result.report
    assert report.ok, report.summary()
    assert (report.tree_size, report.entries_checked, report.device_signatures_checked) == (
        40,
        40,
        40,
    )
    assert report.checkpoints_checked == 5  # the four in history, and the latest again
    assert report.consistency_proofs_checked == 3
    assert result.state.tree_size == 40
    assert "OK: no tampering found" in report.summary()


def test_edited_entry_is_named(log: Log, log_key: NamedKey, device: NamedKey) -> None:
    history(log, device, [10, 20, 33])
    original = log.entry(17).entry
    edited = original.replace(b'"avg":21.5', b'"avg":29.5')
    assert edited != original
    tamper(log, ("UPDATE entries SET entry = ? WHERE idx = 17", (edited,)))
    result = audit(log, log_key, device)
    lines = [f.line() for f in result.report.findings]
    assert lines[0].startswith("TAMPER DETECTED: entry 17 does not hash to its log tag id c274b5")
    assert lines[1].startswith("TAMPER DETECTED: entry 17 has a bad device signature")
    assert lines[2] == (
        "TAMPER DETECTED: entry 17 does not match what checkpoint 20 signed: its bytes were changed"
    )
    assert result.state is None


def test_edited_entry_is_located_without_device_keys(
    log: Log, log_key: NamedKey, device: NamedKey
) -> None:
    history(log, device, [6, 25])
    edited = log.entry(21).entry.replace(b'"min":21,', b'"min":11,')
    tamper(log, ("UPDATE entries SET entry = ? WHERE idx = 21", (edited,)))
    auditor = Auditor(source=LocalSource(log), log_key=log_key.verifier_key)
    result = auditor.run(full=True)
    tag = log.entry(21).log_tag_id
    assert [f.line() for f in result.report.findings] == [
        f"TAMPER DETECTED: entry 21 does not hash to its log tag id {tag}: "
        "its bytes were changed after it was appended",
        "TAMPER DETECTED: entry 21 does not match what checkpoint 25 signed: "
        "its bytes were changed",
    ]


def test_edited_entry_and_its_stored_hashes_still_detected(
    log: Log, log_key: NamedKey, device: NamedKey
) -> None:
    history(log, device, [8])
    edited = log.entry(3).entry.replace(b'"max":22.25', b'"max":12.25')
    leaf = merkle.leaf_hash(edited)
    with sqlite3.connect(db_path(log)) as db:
        (chunk,) = db.execute(
            "SELECT hashes FROM merkle_chunks WHERE level = 0 AND chunk = 0"
        ).fetchone()
    forged = chunk[: 3 * 32] + leaf + chunk[4 * 32 :]
    tamper(
        log,
        ("UPDATE entries SET entry = ?, leaf_hash = ? WHERE idx = 3", (edited, leaf)),
        # The stored level-0 hash too, so that proofs are served from the forged leaf.
        ("UPDATE merkle_chunks SET hashes = ? WHERE level = 0 AND chunk = 0", (forged,)),
    )
    result = audit(log, log_key, device)
    assert result.report.findings[0].subject == 3
    assert first_line(result).startswith("TAMPER DETECTED: entry 3 has a bad device signature")
    assert (
        result.report.findings[-1]
        .line()
        .startswith("TAMPER DETECTED: checkpoint 8 does not match the entries served")
    )


def test_deleted_entry_is_named(log: Log, log_key: NamedKey, device: NamedKey) -> None:
    history(log, device, [10, 15])
    tamper(log, ("DELETE FROM entries WHERE idx = 12", ()))
    assert first_line(audit(log, log_key, device)) == (
        "TAMPER DETECTED: entry 12 is missing from the log: the source skips to entry 13"
    )


def test_deleted_last_entry_is_named(log: Log, log_key: NamedKey, device: NamedKey) -> None:
    history(log, device, [10])
    tamper(log, ("DELETE FROM entries WHERE idx = 9", ()))
    assert first_line(audit(log, log_key, device)).startswith(
        "TAMPER DETECTED: entry 9 is missing from the log"
    )


def test_edited_checkpoint_is_named(log: Log, log_key: NamedKey, device: NamedKey) -> None:
    history(log, device, [4, 9])
    note = log.checkpoint(4).note.replace("\n4\n", "\n5\n")
    tamper(log, ("UPDATE checkpoints SET note = ? WHERE tree_size = 4", (note,)))
    assert first_line(audit(log, log_key, device, full=False)).startswith(
        "TAMPER DETECTED: checkpoint 5 is invalid: checkpoint signature"
    )


@pytest.fixture
def fork(tmp_path: Path, log_key: NamedKey) -> Log:
    """A second database signed with the same log key: the operator's other history."""
    path = tmp_path / "fork"
    path.mkdir()
    return Log.open(url=f"sqlite:///{path}/ledger.sqlite3", signer=log_key, origin=ORIGIN)


def test_forked_history_after_a_seen_checkpoint(
    log: Log, fork: Log, log_key: NamedKey, device: NamedKey, tmp_path: Path
) -> None:
    history(log, device, [4, 10])
    seen = audit(log, log_key, device, full=False)
    assert seen.report.ok and seen.state.tree_size == 10
    state_file = tmp_path / "audit-state.json"
    seen.state.save(state_file)
    # The fork shares entries 0-5, then goes its own way, and grows past the seen size.
    fork.append([submission(device, seq) for seq in range(6)])
    fork.append([submission(device, seq, other={"unit": "Wh", "sum": 1}) for seq in range(6, 14)])
    fork.seal()
    state = AuditState.load(state_file)
    for full in (False, True):
        result = audit(fork, log_key, device, state=state, full=full)
        assert first_line(result).startswith(
            "TAMPER DETECTED: checkpoint 14 does not extend checkpoint 10 seen earlier: "
            "forked history"
        )
        assert result.state == state  # the audited state is kept, not replaced


def test_forked_history_at_the_seen_size(
    log: Log, fork: Log, log_key: NamedKey, device: NamedKey
) -> None:
    history(log, device, [7])
    state = audit(log, log_key, device, full=False).state
    fork.append([submission(device, seq, other={"unit": "Wh", "sum": 2}) for seq in range(7)])
    fork.seal()
    assert first_line(audit(fork, log_key, device, state=state, full=False)) == (
        "TAMPER DETECTED: checkpoint 7 has another root than the checkpoint of that size "
        "seen earlier: forked history"
    )


def test_rolled_back_log(log: Log, fork: Log, log_key: NamedKey, device: NamedKey) -> None:
    history(log, device, [9])
    state = audit(log, log_key, device, full=False).state
    fork.append([submission(device, seq) for seq in range(5)])
    fork.seal()
    assert "the log was rolled back" in first_line(
        audit(fork, log_key, device, state=state, full=False)
    )


def test_incremental_audit_checks_only_new_checkpoints(
    log: Log, log_key: NamedKey, device: NamedKey
) -> None:
    history(log, device, [3, 6, 9])
    state = audit(log, log_key, device, full=False).state
    history(log, device, [12, 15])
    report = audit(log, log_key, device, state=state, full=False).report
    assert report.ok and report.previous_tree_size == 9 and report.tree_size == 15
    assert report.consistency_proofs_checked == 2  # 9 -> 12 -> 15; the seen size is re-read
    assert report.checkpoints_checked == 4  # 9, 12, 15 and the latest


def test_anchor_not_matching_its_checkpoint(
    log: Log,
    log_key: NamedKey,
    device: NamedKey,
    w3: Web3,
    account: LocalAccount,
    contract: str,
) -> None:
    history(log, device, [5])
    anchorer = Anchorer(log=log, w3=w3, account=account, contract=contract)
    assert anchorer.run_once(wait_seconds=5).action == "confirmed"
    history(log, device, [9])
    assert anchorer.run_once(wait_seconds=5).action == "confirmed"
    clean = audit(log, log_key, device, auditor={"chain": lambda: w3})
    assert clean.report.ok and clean.report.anchors_checked_on_chain == 2

    # The stored anchor claims another root: caught offline.
    tamper(log, ("UPDATE anchors SET root_hash = ? WHERE tree_size = 9", (b"\x07" * 32,)))
    assert first_line(audit(log, log_key, device, full=False)).startswith(
        "TAMPER DETECTED: checkpoint 9 anchor 0x"
    )
    # The stored anchor points at a transaction anchoring something else: caught on chain.
    first = log.anchors()[0]
    tamper(
        log,
        (
            "UPDATE anchors SET root_hash = ?, tx_hash = ?, block_number = ? WHERE tree_size = 9",
            (log.checkpoint(9).root_hash, first.tx_hash, first.block_number),
        ),
    )
    lines = audit(log, log_key, device, full=False, auditor={"chain": lambda: w3})
    assert first_line(lines).startswith(f"TAMPER DETECTED: checkpoint 9 anchor {first.tx_hash}")
    assert "chain has root" in first_line(lines)


class MemorySource:
    """An honest in-memory log with one entry's bytes swapped: checks the descent alone."""

    description = "memory"

    def __init__(self, key: NamedKey, entries: list[bytes], sizes: list[int], bad: int) -> None:
        self.tree = merkle.MemoryTree()
        self.tree.append([merkle.leaf_hash(e) for e in entries])
        self.notes = [
            Checkpoint(origin=ORIGIN, tree_size=s, root_hash=self.tree.root(s)).sign(key)
            for s in sizes
        ]
        self.served = list(entries)
        self.served[bad] = b"{}"

    def checkpoints(self, *, after: int) -> Iterator[SourceCheckpoint]:
        """All notes."""
        return iter([SourceCheckpoint(note=n) for n in self.notes])

    def latest_checkpoint(self) -> str | None:
        """The last note."""
        return self.notes[-1]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """From the honest tree."""
        return merkle.consistency_proof(first, second, self.tree.fetch)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes] | None:
        """From the honest tree."""
        return merkle.inclusion_proof(index, tree_size, self.tree.fetch)

    def entries(self, *, start: int, end: int) -> Iterator[Sequence[SourceEntry]]:
        """The served entries, swapped one included, in pages of 7."""
        for page in range(start, end, 7):
            yield [
                SourceEntry(index=i, data=self.served[i]) for i in range(page, min(page + 7, end))
            ]


@pytest.mark.parametrize("sizes", [[1], [2], [5], [8], [13], [3, 16], [7, 21, 32, 33]])
def test_descent_names_every_swapped_entry(log_key: NamedKey, sizes: list[int]) -> None:
    entries = [json.dumps({"i": i}).encode() for i in range(sizes[-1])]
    for bad in range(sizes[-1]):
        source = MemorySource(log_key, entries, sizes, bad)
        result = Auditor(source=source, log_key=log_key.verifier_key).run(full=True)
        entry_findings = [
            f for f in result.report.findings if f.message.startswith("does not match")
        ]
        assert [(f.kind, f.subject) for f in entry_findings] == [("entry", bad)], bad


def test_parallel_workers_give_the_same_findings(
    log: Log, log_key: NamedKey, device: NamedKey
) -> None:
    history(log, device, [300, 600])
    edited = log.entry(450).entry.replace(b'"avg":21.5', b'"avg":20.5')
    tamper(log, ("UPDATE entries SET entry = ? WHERE idx = 450", (edited,)))
    serial = audit(log, log_key, device, auditor={"workers": 1})
    parallel = audit(log, log_key, device, auditor={"workers": 2, "parallel_threshold": 1})
    assert [f.line() for f in parallel.report.findings] == [
        f.line() for f in serial.report.findings
    ]
    assert parallel.report.findings[-1].subject == 450


def test_cli_audit_local_exit_codes_report_and_state(
    log: Log, log_key: NamedKey, device: NamedKey, tmp_path: Path, capsys: Any
) -> None:
    history(log, device, [4, 11])
    url = f"sqlite:///{db_path(log)}"
    keys = tmp_path / "devices.json"
    keys.write_text(json.dumps({device.name: device.public_key_b64}))
    state, report = tmp_path / "state.json", tmp_path / "report.json"
    argv = ["audit", "--local", "--database-url", url, "--log-key", log_key.verifier_key]
    argv += ["--device-keys", str(keys), "--state", str(state), "--report", str(report)]
    assert main([*argv, "--full"]) == 0
    assert "OK: no tampering found" in capsys.readouterr().out
    assert json.loads(state.read_text())["tree_size"] == 11
    assert json.loads(report.read_text())["ok"] is True

    tamper(log, ("DELETE FROM entries WHERE idx = 2", ()))
    assert main([*argv, "--full"]) == 1
    out = capsys.readouterr().out
    assert "TAMPER DETECTED: entry 2 is missing from the log" in out
    saved = json.loads(report.read_text())
    assert saved["ok"] is False and saved["findings"][0]["subject"] == 2
    assert json.loads(state.read_text())["tree_size"] == 11  # unchanged after a finding

    other = NamedKey.generate("someone-else").verifier_key
    assert main(["audit", "--local", "--database-url", url, "--log-key", other]) == 1
    assert "checkpoint signature" in capsys.readouterr().out
    assert main([*argv[:-4], "--state", str(state), "--log-key", other]) == 2


def test_cli_watch_repeats_until_a_finding(
    log: Log, log_key: NamedKey, device: NamedKey, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import ledger.anchor_commands

    history(log, device, [5])
    rounds: list[float] = []

    def between_rounds(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 1:
            history(log, device, [8])  # the log grows: still clean
        else:
            tamper(log, ("DELETE FROM entries WHERE idx = 6", ()))

    monkeypatch.setattr(ledger.anchor_commands.time, "sleep", between_rounds)
    argv = ["audit", "--local", "--database-url", f"sqlite:///{db_path(log)}"]
    argv += ["--log-key", log_key.verifier_key, "--full", "--watch", "30"]
    assert main(argv) == 1
    assert rounds == [30, 30]
    out = capsys.readouterr().out
    assert out.count("OK: no tampering found") == 2
    assert "TAMPER DETECTED: entry 6 is missing from the log" in out
