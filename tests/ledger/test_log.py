"""The storage suite: one set of tests run on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger import merkle
from ledger.encoding import canonical_json
from ledger.errors import ConflictError, NotFoundError, NotSealedError
from ledger.keys import NamedKey
from ledger.log import Appended, Log
from ledger.note import Checkpoint, NoteVerifier
from ledger.verify import verify_bundle
from tests.ledger.helpers import submission


@pytest.fixture
def log_key() -> NamedKey:
    return NamedKey.generate("example.org/patio-test")


@pytest.fixture
def device() -> NamedKey:
    return NamedKey.generate("boiler-1")


@pytest.fixture
def log(database_url: str, log_key: NamedKey) -> Log:
    return Log.open(url=database_url, signer=log_key)


def accepted(outcomes: list[Appended | ConflictError]) -> list[Appended]:
    assert all(isinstance(o, Appended) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, Appended)]


def test_append_assigns_consecutive_indexes_and_log_tags(log: Log, device: NamedKey) -> None:
    first = accepted(log.append([submission(device, i) for i in range(3)]))
    second = accepted(log.append([submission(device, 3)]))
    assert [a.entry.index for a in first + second] == [0, 1, 2, 3]
    assert {a.status for a in first + second} == {"accepted"}
    entry = second[0].entry
    assert entry.log_tag_id == "c274b5" + merkle.leaf_hash(entry.entry).hex()
    assert len(entry.log_tag_id) == 70
    assert log.entry_by_tag(entry.log_tag_id) == entry
    obj = entry.entry_object()
    assert obj["v"] == 1 and obj["contract"] == "energy_minute@1"
    assert entry.entry == canonical_json(obj)


def test_same_bytes_again_is_idempotent(log: Log, device: NamedKey) -> None:
    original = accepted(log.append([submission(device, 7)]))[0]
    again = accepted(log.append([submission(device, 7), submission(device, 7)]))
    assert [a.status for a in again] == ["duplicate", "duplicate"]
    assert {a.entry.log_tag_id for a in again} == {original.entry.log_tag_id}
    assert log.size() == 1


def test_other_bytes_for_a_seen_seq_conflict_and_are_kept(log: Log, device: NamedKey) -> None:
    original = accepted(log.append([submission(device, 7)]))[0]
    other = submission(device, 7, m={"unit": "Wh", "sum": 1.5})
    outcome = log.append([other, submission(device, 8)])
    assert isinstance(outcome[0], ConflictError)
    assert outcome[0].log_tag_id == original.entry.log_tag_id
    assert isinstance(outcome[1], Appended) and outcome[1].entry.index == 1
    with log.engine.connect() as conn:
        kept = conn.execute(text("SELECT device_id, seq, existing_idx, entry FROM conflicts")).one()
    assert (kept.device_id, kept.seq, kept.existing_idx) == ("boiler-1", 7, 0)
    assert b'"sum":1.5' in bytes(kept.entry)


def test_conflict_within_one_batch(log: Log, device: NamedKey) -> None:
    outcome = log.append([submission(device, 1), submission(device, 1, m={"unit": "Wh", "sum": 2})])
    assert isinstance(outcome[0], Appended) and isinstance(outcome[1], ConflictError)


def test_seal_signs_a_checkpoint_over_everything(
    log: Log, device: NamedKey, log_key: NamedKey
) -> None:
    empty = log.seal()
    assert empty.tree_size == 0 and empty.root_hash == merkle.EMPTY_ROOT
    log.append([submission(device, i) for i in range(5)])
    sealed = log.seal()
    assert sealed.tree_size == 5
    checkpoint = Checkpoint.open(sealed.note, NoteVerifier.parse(log_key.verifier_key))
    assert checkpoint.origin == "example.org/patio-test"
    assert checkpoint.root_hash == sealed.root_hash
    assert log.seal() == sealed  # nothing new: the same checkpoint
    assert log.latest_checkpoint() == sealed


def test_incremental_seals_match_the_reference_tree(log: Log, device: NamedKey) -> None:
    reference = merkle.MemoryTree()
    sizes = []
    seq = 0
    for batch in (1, 2, 5, 300, 1, 255, 257, 3):
        outcomes = accepted(log.append([submission(device, seq + i) for i in range(batch)]))
        seq += batch
        reference.append([o.entry.leaf_hash for o in outcomes])
        sealed = log.seal()
        sizes.append(sealed.tree_size)
        assert sealed.root_hash == reference.root()
    for size in sizes:
        root = log.checkpoint(size).root_hash
        for index in {0, size // 2, size - 1}:
            proof = log.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(index, size, reference.fetch)
            merkle.verify_inclusion(log.entry(index).leaf_hash, index, size, proof, root)
        for first in sizes:
            if first <= size:
                proof = log.consistency_proof(first, size)
                merkle.verify_consistency(first, size, proof, log.checkpoint(first).root_hash, root)


def test_proofs_need_a_checkpoint(log: Log, device: NamedKey) -> None:
    log.append([submission(device, 0), submission(device, 1)])
    with pytest.raises(NotFoundError, match="no checkpoint at tree size 2"):
        log.inclusion_proof(0, 2)
    with pytest.raises(NotSealedError):
        log.bundle(log.entry(0).log_tag_id, device_key=device.public_key_b64)
    log.seal()
    with pytest.raises(NotFoundError):
        log.inclusion_proof(2, 2)
    with pytest.raises(NotFoundError):
        log.consistency_proof(1, 2)  # no checkpoint at size 1


def test_bundles_verify_offline(log: Log, device: NamedKey, log_key: NamedKey) -> None:
    tags = [
        a.entry.log_tag_id for a in accepted(log.append([submission(device, i) for i in range(9)]))
    ]
    log.seal()
    for tag in tags:
        bundle = log.bundle(tag, device_key=device.public_key_b64).to_json()
        result = verify_bundle(bundle, log_key=log_key.verifier_key)
        assert result.bundle.log_tag_id == tag and result.checkpoint.tree_size == 9


def test_the_log_survives_reopening(database_url: str, log_key: NamedKey, device: NamedKey) -> None:
    first = Log.open(url=database_url, signer=log_key)
    first.append([submission(device, i) for i in range(4)])
    sealed = first.seal()
    first.engine.dispose()
    again = Log.open(url=database_url, signer=log_key)
    assert again.latest_checkpoint() == sealed
    again.append([submission(device, 4)])
    assert again.seal().tree_size == 5
    assert accepted(again.append([submission(device, 0)]))[0].status == "duplicate"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET entry = X'00' WHERE idx = 0",
        "UPDATE entries SET device_id = 'other'",
        "DELETE FROM entries WHERE idx = 1",
        "DELETE FROM entries",
        "UPDATE checkpoints SET note = 'forged'",
        "DELETE FROM checkpoints",
        "DELETE FROM conflicts",
    ],
)
def test_the_database_refuses_to_rewrite_history(
    log: Log, device: NamedKey, statement: str
) -> None:
    log.append([submission(device, 0), submission(device, 1), submission(device, 1, x=1)])
    log.seal()
    if log.engine.dialect.name == "postgresql":
        statement = statement.replace("X'00'", "'\\x00'::bytea")
    with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as conn:
        conn.execute(text(statement))
    assert log.size() == 2 and log.latest_checkpoint() is not None


def test_truncate_is_refused_on_postgresql(
    postgres_url: str, log_key: NamedKey, device: NamedKey
) -> None:
    log = Log.open(url=postgres_url, signer=log_key)
    log.append([submission(device, 0)])
    with pytest.raises(DBAPIError, match="append-only"), log.engine.begin() as conn:
        conn.execute(text("TRUNCATE entries CASCADE"))


def test_late_and_out_of_order_seqs(log: Log, device: NamedKey) -> None:
    accepted(log.append([submission(device, 1), submission(device, 5)]))
    late = accepted(
        log.append([submission(device, 3), submission(device, 1), submission(device, 9)])
    )
    assert [a.status for a in late] == ["accepted", "duplicate", "accepted"]
    other = NamedKey.generate("boiler-2")
    assert accepted(log.append([submission(other, 1)]))[0].status == "accepted"
