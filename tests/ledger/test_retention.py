"""Dropped payloads (docs/retention.md): only under a redaction row, proofs still verify with
`patio verify`, the audit folds leaf hashes over dropped ranges, and nothing else changes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.audit import Auditor, LocalSource
from ledger.errors import PayloadRemovedError, VerificationError
from ledger.keys import NamedKey
from ledger.log import Appended, Log
from ledger.verify import verify_bundle
from tests.ledger.helpers import submission


@pytest.fixture
def log_key() -> NamedKey:
    return NamedKey.generate("example.org/retention")


@pytest.fixture
def device() -> NamedKey:
    return NamedKey.generate("dev-1")


@pytest.fixture
def log(database_url: str, log_key: NamedKey) -> Log:
    return Log.open(url=database_url, signer=log_key)


def _filled(log: Log, device: NamedKey, count: int = 6) -> list[Appended]:
    outcomes = log.append([submission(device, i) for i in range(count)])
    assert all(isinstance(o, Appended) for o in outcomes)
    log.seal()
    return [o for o in outcomes if isinstance(o, Appended)]


def _bytea(statement: str, log: Log) -> str:
    return (
        statement.replace("X'00'", "'\\x00'::bytea")
        if log.engine.dialect.name == "postgresql"
        else statement
    )


def test_redact_drops_payloads_and_keeps_leaf_hashes_and_proofs(log: Log, device: NamedKey) -> None:
    appended = _filled(log, device)
    before = {e.index: e.leaf_hash for e in log.entries()}
    root = log.latest_checkpoint()
    assert log.redact([1, 2, 3], reason="retention", reference="retention:hoa:30d") == 3
    assert log.redact([2, 3, 4], reason="erasure", reference="req-1") == 1  # 2, 3 already gone
    stored = {e.index: e for e in log.entries()}
    assert {i for i, e in stored.items() if e.entry is None} == {1, 2, 3, 4}
    assert {i: e.leaf_hash for i, e in stored.items()} == before
    assert log.latest_checkpoint() == root
    with pytest.raises(PayloadRemovedError):
        stored[2].entry_object()
    redaction = log.redaction(4)
    assert redaction is not None and (redaction.reason, redaction.reference) == ("erasure", "req-1")
    assert log.redaction(0) is None

    bundle = log.bundle(appended[2].entry.log_tag_id, device_key=None).to_json()
    assert bundle["entry"] is None and bundle["device_key"] is None
    assert bundle["leaf_hash"] == appended[2].entry.leaf_hash.hex()
    assert bundle["redacted"]["reason"] == "retention"
    verified = verify_bundle(bundle, log_key=log.signer.verifier_key)  # type: ignore[union-attr]
    assert not verified.payload_checked
    with pytest.raises(VerificationError, match="payload: the payload was removed"):
        verify_bundle(bundle, log_key=None, require_payload=True)
    # The leaf hash is what inclusion is checked against: another one fails.
    forged = dict(bundle, leaf_hash=appended[3].entry.leaf_hash.hex())
    forged["log_tag_id"] = "c274b5" + appended[3].entry.leaf_hash.hex()
    with pytest.raises(VerificationError, match="inclusion"):
        verify_bundle(forged, log_key=None)
    # A bundle of a kept entry is unchanged: no leaf_hash, no redacted.
    kept = log.bundle(appended[0].entry.log_tag_id, device_key=device.public_key_b64).to_json()
    assert "redacted" not in kept and "leaf_hash" not in kept
    assert verify_bundle(kept, log_key=None).payload_checked


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET entry = NULL WHERE idx = 0",  # no redaction row for it
        "UPDATE entries SET entry = NULL, device_id = 'x' WHERE idx = 1",  # more than the payload
        "UPDATE entries SET entry = X'00' WHERE idx = 1",  # a payload put back
        "UPDATE entries SET leaf_hash = leaf_hash WHERE idx = 1",
        "DELETE FROM entries WHERE idx = 1",
        "DELETE FROM redactions",
        "UPDATE redactions SET reason = 'other'",
        "UPDATE checkpoints SET note = 'forged'",
        "DELETE FROM checkpoints",
    ],
)
def test_the_database_refuses_every_other_rewrite(
    log: Log, device: NamedKey, statement: str
) -> None:
    _filled(log, device, 3)
    log.redact([1], reason="retention", reference="r")
    with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as conn:
        conn.execute(text(_bytea(statement, log)))
    assert [e.entry is None for e in log.entries()] == [False, True, False]


def test_a_redaction_row_alone_lets_that_one_payload_be_cleared(log: Log, device: NamedKey) -> None:
    """The sanctioned path is the redaction row, whoever writes it: it stays on record."""
    _filled(log, device, 2)
    with log.engine.begin() as conn:
        conn.execute(text("INSERT INTO redactions VALUES (0, 'erasure', 'manual', 'now')"))
        conn.execute(text("UPDATE entries SET entry = NULL WHERE idx = 0"))
        with pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text("UPDATE entries SET entry = NULL WHERE idx = 1"))


def _conflicted(log: Log, device: NamedKey) -> None:
    """Two entries and a refused resubmission of the second, kept in `conflicts`."""
    _filled(log, device, 2)
    [refused] = log.append([submission(device, 1, other={"unit": "W", "n": 1})])
    assert not isinstance(refused, Appended)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE conflicts SET entry = NULL",  # no conflict redaction for it
        "UPDATE conflicts SET entry = X'00'",
        "UPDATE conflicts SET seq = 7",
        "DELETE FROM conflicts",
    ],
)
def test_conflict_evidence_is_cleared_only_under_a_conflict_redaction(
    log: Log, device: NamedKey, statement: str
) -> None:
    _conflicted(log, device)
    with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as conn:
        conn.execute(text(_bytea(statement, log)))
    leaf = _bytea("X'00'", log)
    with log.engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO conflict_redactions VALUES (1, {leaf}, 'erasure', 'manual', 'now')")
        )
        conn.execute(text("UPDATE conflicts SET entry = NULL WHERE id = 1"))
    for rewrite in (
        "UPDATE conflicts SET entry = X'00'",  # a payload put back
        "UPDATE conflict_redactions SET reason = 'other'",
        "DELETE FROM conflict_redactions",
        "DELETE FROM conflicts",
    ):
        with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as conn:
            conn.execute(text(_bytea(rewrite, log)))
    with log.engine.connect() as conn:
        kept = conn.execute(text("SELECT device_id, seq, entry FROM conflicts")).one()
    assert tuple(kept) == (device.name, 1, None)  # still counted, its payload gone


def test_truncate_stays_refused_on_postgresql(
    postgres_url: str, log_key: NamedKey, device: NamedKey
) -> None:
    log = Log.open(url=postgres_url, signer=log_key)
    _filled(log, device, 2)
    log.redact([0], reason="retention", reference="r")
    for table in ("entries", "redactions", "conflicts", "conflict_redactions"):
        with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))


def test_a_resend_of_a_dropped_entry_is_a_duplicate_and_stores_nothing(
    log: Log, device: NamedKey
) -> None:
    _filled(log, device, 2)
    log.redact([1], reason="erasure", reference="r")
    [again] = log.append([submission(device, 1, other={"unit": "W", "n": 1})])
    assert isinstance(again, Appended) and again.status == "duplicate"
    with log.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM conflicts")).scalar_one() == 0
    assert log.size() == 2


def test_audit_over_dropped_ranges(log: Log, device: NamedKey, log_key: NamedKey) -> None:
    _filled(log, device, 20)
    log.redact(list(range(3, 15)), reason="retention", reference="r")
    source = LocalSource(log, device_keys={device.name: [device.public_key_b64]})
    report = Auditor(source=source, log_key=log_key.verifier_key, workers=1).run(full=True).report
    assert report.ok, report.summary()
    assert report.entries_checked == 20 and report.entries_redacted == 12
    assert report.device_signatures_checked == 8
    assert "12 entries with payloads removed" in report.summary()


def test_patio_verify_cli_accepts_a_redacted_bundle_and_says_so(
    log: Log, device: NamedKey, tmp_path: Path
) -> None:
    appended = _filled(log, device, 4)
    log.redact([2], reason="retention", reference="retention:hoa-1:30d")
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(log.bundle(appended[2].entry.log_tag_id, device_key=None).to_json()))
    patio = [sys.executable, "-m", "ledger.cli", "verify", str(path)]
    key = log.signer.verifier_key  # type: ignore[union-attr]
    ok = subprocess.run([*patio, "--log-key", key], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"is leaf 2 of {log.origin}" in ok.stdout
    assert "PAYLOAD REMOVED: under retention (retention:hoa-1:30d)" in ok.stdout
    assert "device signature could not be" in ok.stdout
    strict = subprocess.run(
        [*patio, "--log-key", key, "--require-payload"], capture_output=True, text=True
    )
    assert strict.returncode == 1 and strict.stderr.startswith("patio: FAILED payload:")
    bundle = json.loads(path.read_text())
    bundle["entry"] = {"payload": {}, "sig": "x"}  # an entry beside `redacted`: unusable
    path.write_text(json.dumps(bundle))
    bad = subprocess.run([*patio, "--log-key", key], capture_output=True, text=True)
    assert bad.returncode == 2 and "entry must be null" in bad.stderr


def test_redactions_run_beside_concurrent_appends(
    log: Log, device: NamedKey, log_key: NamedKey
) -> None:
    """Appends of two devices and repeated redactions of one of them, at once: every append
    lands, every redaction has its row, the tree and the audit stay whole."""
    other = NamedKey.generate("dev-2")
    _filled(log, device, 50)
    errors: list[BaseException] = []
    appending = threading.Event()

    def append(key: NamedKey, first: int) -> None:
        try:
            for start in range(first, first + 200, 20):
                log.append([submission(key, seq) for seq in range(start, start + 20)])
                appending.set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def redact() -> None:
        try:
            appending.wait(30)
            for _ in range(10):
                indexes = log.payload_indexes(device_ids=[device.name], limit=25)
                log.redact(indexes, reason="retention", reference="r")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=append, args=(device, 50)),
        threading.Thread(target=append, args=(other, 0)),
        threading.Thread(target=redact),
        threading.Thread(target=redact),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert log.size() == 450
    log.seal()
    stored = log.entries(limit=1000)
    assert [e.index for e in stored] == list(range(450))
    dropped = {e.index for e in stored if e.entry is None}
    assert dropped and all(e.device_id == device.name for e in stored if e.index in dropped)
    with log.engine.connect() as conn:
        rows = {r[0] for r in conn.execute(text("SELECT idx FROM redactions"))}
    assert rows == dropped
    source = LocalSource(log, device_keys={k.name: [k.public_key_b64] for k in (device, other)})
    report = Auditor(source=source, log_key=log_key.verifier_key, workers=1).run(full=True).report
    assert report.ok and report.entries_redacted == len(dropped), report.summary()
