"""The append-only log: append, seal into signed checkpoints, proofs and proof bundles."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from ledger import merkle
from ledger.bundle import Anchor, ProofBundle, Redaction, leaf_hash_of_tag, log_tag_id
from ledger.encoding import canonical_json, parse_json, rfc3339_utc
from ledger.errors import ConflictError, NotFoundError, NotSealedError, PayloadRemovedError
from ledger.keys import NamedKey
from ledger.merkle import NodeId
from ledger.note import Checkpoint
from ledger.storage import (
    CHUNK_SIZE,
    DriverCursor,
    anchors,
    checkpoints,
    entries,
    open_engine,
    redactions,
)
from ledger.storage import database_url as database_url_for

ENTRY_VERSION = 1
ENTRY_COLUMNS = "idx, leaf_hash, entry, device_id, seq, contract, received_at, minute"
ENTRY_COLUMNS_E = ", ".join(f"e.{column}" for column in ENTRY_COLUMNS.split(", "))
# PostgreSQL takes a commit's entries as one array per column in one statement, sent in
# binary (`%b`: psycopg writes each bytea array element as it is, where text format escapes
# the entry bytes): 5-6.5 us of the writer's CPU an entry, against 13-16 us as an
# executemany of one row each (200-entry commits, scratch timing on 2026-11-30).
ENTRIES_UNNEST = (
    f"INSERT INTO entries ({ENTRY_COLUMNS}) SELECT * FROM unnest(%b::bigint[], %b::bytea[], "
    "%b::bytea[], %b::varchar[], %b::bigint[], %b::varchar[], %b::varchar[], %b::varchar[])"
)
# Transaction-scoped PostgreSQL advisory lock keys (arbitrary, fixed for this project).
APPEND_LOCK = 0x7061_7469_6F01
SEAL_LOCK = 0x7061_7469_6F02
REDACT_BATCH = 5_000  # payloads dropped per transaction by a retention run
# PostgreSQL NOTIFY channel: every commit that adds entries or a checkpoint wakes the
# listeners (gateway.events), which then read the log by position. Delivered at commit.
LOG_CHANNEL = "patio_log"


@functools.lru_cache(maxsize=1024)
def _canonical_repeated(value: str) -> bytes:
    # Contract names and a batch's received_at repeat for every entry: encode them once.
    return canonical_json(value)


def entry_bytes(*, contract: str, payload_jcs: bytes, sig: str, received_at: str) -> bytes:
    """JCS of the entry object (pinned format 4), reusing the payload's canonical bytes.

    RFC 8785 section 3.2.3 orders members by UTF-16 code units: contract, payload,
    received_at, sig, v. Only the payload is a nested value, so the object is those
    members' canonical encodings in that order (tests check equality with a full encode).
    """
    return b"".join(
        (
            b'{"contract":',
            _canonical_repeated(contract),
            b',"payload":',
            payload_jcs,
            b',"received_at":',
            _canonical_repeated(received_at),
            b',"sig":',
            # An ASCII string is its own plain value: canonical_json would hand it to orjson.
            orjson.dumps(sig) if sig.isascii() else canonical_json(sig),
            b',"v":1}',
        )
    )


class Submission:
    """What a contract asks the log to record."""

    # A plain class, not a frozen dataclass: the writer builds one per envelope, and a
    # frozen dataclass's __init__ sets each field through object.__setattr__ (1.8 us, 0.6 here).
    __slots__ = (
        "_payload", "contract", "derived", "device_id", "minute", "payload_jcs", "seq", "sig",
    )  # fmt: skip

    def __init__(
        self,
        *,
        contract: str,
        payload: Mapping[str, Any] | None = None,
        sig: str,
        device_id: str | None = None,
        seq: int | None = None,
        minute: str | None = None,
        payload_jcs: bytes | None = None,
        derived: Any = None,
    ) -> None:
        if payload is None and payload_jcs is None:
            raise TypeError("a submission needs its payload or the payload's JCS")
        self.contract = contract
        self._payload = payload
        self.sig = sig
        self.device_id = device_id
        self.seq = seq
        # A slot the device may fill once, whatever the seq (energy_minute: its `start`, in
        # the one form the strict parser takes); a second submission for it is a conflict.
        self.minute = minute
        self.payload_jcs = payload_jcs  # when the caller already encoded it to check the sig
        self.derived = derived  # what the contract derived from the payload for append hooks

    @property
    def payload(self) -> Mapping[str, Any]:
        """The payload; read from its JCS when it came without (the writer's hand-off sends
        the bytes alone, and JCS is plain JSON that orjson reads to the same values)."""
        if self._payload is None:
            assert self.payload_jcs is not None
            self._payload = orjson.loads(self.payload_jcs)
        return self._payload

    def __repr__(self) -> str:
        return (
            f"Submission(contract={self.contract!r}, device_id={self.device_id!r}, "
            f"seq={self.seq!r}, minute={self.minute!r})"
        )


@dataclass(frozen=True, kw_only=True)
class StoredEntry:
    """One entry of the log."""

    index: int
    leaf_hash: bytes
    entry: bytes | None  # None once the payload was dropped (Log.redact)
    device_id: str | None
    seq: int | None
    contract: str
    received_at: str
    minute: str | None = None

    @property
    def log_tag_id(self) -> str:
        """The entry's log tag id (pinned format 6)."""
        return log_tag_id(self.leaf_hash)

    def entry_object(self) -> dict[str, Any]:
        """The entry as a JSON object; PayloadRemovedError if it was dropped."""
        if self.entry is None:
            raise PayloadRemovedError(f"the payload of entry {self.log_tag_id} was removed")
        value: dict[str, Any] = parse_json(self.entry, what="stored entry")
        return value


@dataclass(frozen=True, kw_only=True)
class Appended:
    """The outcome of one accepted submission: new, or the earlier identical one."""

    status: Literal["accepted", "duplicate"]
    entry: StoredEntry


@dataclass
class _Known:
    """What an append knows of its devices: entries it may collide with, and where each
    device stood before it (highest seq, latest minute)."""

    by_seq: dict[tuple[str | None, int | None], StoredEntry] = field(default_factory=dict)
    by_minute: dict[tuple[str | None, str | None], StoredEntry] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    last_minute: dict[str, str] = field(default_factory=dict)

    def add(self, entry: StoredEntry) -> None:
        """An entry already stored, or taken by this append (later ones collide with it)."""
        self.by_seq[entry.device_id, entry.seq] = entry
        if entry.minute is not None:
            self.by_minute[entry.device_id, entry.minute] = entry

    def standing(
        self, device: str, taken: Sequence[tuple[Any, ...]]
    ) -> tuple[int | None, str | None]:
        """The device's highest seq and latest minute, counting the rows this append takes
        (worked out only for a refusal, so the usual append pays nothing for it)."""
        mine = [row for row in taken if row[3] == device]  # ENTRY_COLUMNS: device_id
        seqs: list[int] = [row[4] for row in mine if row[4] is not None]
        minutes: list[str] = [row[7] for row in mine if row[7] is not None]
        if device in self.last_seq:
            seqs.append(self.last_seq[device])
        if device in self.last_minute:
            minutes.append(self.last_minute[device])
        return max(seqs, default=None), max(minutes, default=None)


Within = Callable[[Connection, Sequence[Submission], list[Appended | ConflictError]], None]
"""Work done inside an append's transaction (see Log.append)."""


@dataclass(frozen=True, kw_only=True)
class StoredCheckpoint:
    """A signed checkpoint as stored."""

    tree_size: int
    root_hash: bytes
    note: str
    created_at: str


@dataclass(frozen=True, kw_only=True)
class StoredAnchor:
    """An anchor transaction recorded for a checkpoint."""

    tree_size: int
    root_hash: bytes
    chain_id: int
    contract: str | None
    tx_hash: str
    block_number: int | None
    confirmations: int
    status: str


_NEW = object.__new__
_SET = object.__setattr__


def _appended(row: tuple[Any, ...]) -> Appended:
    """An accepted outcome for a row the append writes (ENTRY_COLUMNS, bytes already).

    The frozen dataclasses' __init__ set each field through object.__setattr__: giving the
    instances a whole __dict__ made from a display costs 1.5-1.8 us an entry instead of
    3.0-3.7, or 2.3-2.7 updated from a zip of field names and the row (same objects).
    """
    index, leaf_hash, data, device_id, seq, contract, received_at, minute = row
    entry = _NEW(StoredEntry)
    _SET(entry, "__dict__", {"index": index, "leaf_hash": leaf_hash, "entry": data,
                             "device_id": device_id, "seq": seq, "contract": contract,
                             "received_at": received_at, "minute": minute})  # fmt: skip
    appended = _NEW(Appended)
    _SET(appended, "__dict__", {"status": "accepted", "entry": entry})
    return appended


def _stored_entry(row: Sequence[Any]) -> StoredEntry:
    """An entry from its ENTRY_COLUMNS, in that order."""
    index, leaf_hash, data, device_id, seq, contract, received_at, minute = row
    return StoredEntry(
        index=index,
        leaf_hash=bytes(leaf_hash),
        entry=None if data is None else bytes(data),
        device_id=device_id,
        seq=seq,
        contract=contract,
        received_at=received_at,
        minute=minute,
    )


def _stored_checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(
        tree_size=row.tree_size,
        root_hash=bytes(row.root_hash),
        note=row.note,
        created_at=row.created_at,
    )


class Log:
    """One append-only Merkle log in one database."""

    def __init__(self, *, engine: Engine, signer: NamedKey | None, origin: str) -> None:
        self.engine = engine
        self.signer = signer
        self.origin = origin
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        self._param = "%s" if self._postgres else "?"  # the driver's placeholder
        self._blob = "bytea" if self._postgres else "blob"

    @classmethod
    def open(cls, *, url: str, signer: NamedKey | None, origin: str | None = None) -> Log:
        """Open (and migrate) the log at `url`; the origin defaults to the signer's name."""
        if origin is None:
            if signer is None:
                raise ValueError("a log without a signer needs an explicit origin")
            origin = signer.name
        return cls(engine=open_engine(url), signer=signer, origin=origin)

    # -- writing -----------------------------------------------------------------------

    def _write(self) -> Connection:
        return self.engine.connect().execution_options(patio_write=True)

    def append(
        self,
        submissions: Sequence[Submission],
        *,
        now: datetime | None = None,
        within: Within | None = None,
    ) -> list[Appended | ConflictError]:
        """Record submissions in one durable transaction; returns after the commit.

        `within` runs inside that transaction, so rows derived from the outcomes (an index)
        commit with them or not at all, for the price of one fsync.
        """
        received_at = rfc3339_utc(now or datetime.now(UTC))
        prepared = []
        for sub in submissions:
            payload_jcs = sub.payload_jcs or canonical_json(sub.payload)
            data = entry_bytes(
                contract=sub.contract, payload_jcs=payload_jcs, sig=sub.sig, received_at=received_at
            )
            prepared.append((sub, payload_jcs, data, merkle.leaf_hash(data)))
        keys = {(s.device_id, s.seq) for s, *_ in prepared if s.device_id is not None}
        slots = {(s.device_id, s.minute) for s, *_ in prepared if s.device_id and s.minute}
        results: list[Appended | ConflictError] = []
        new_rows: list[tuple[Any, ...]] = []
        evidence: list[tuple[Any, ...]] = []
        refused: list[ConflictError] = []
        # On PostgreSQL the statements share a psycopg pipeline: those whose answer is not
        # read (the lock, the writes) go out without waiting for one.
        with self._write() as conn, conn.begin(), (cursor := DriverCursor(conn)).pipeline():
            if self._postgres:  # on a cursor of its own: its answer is never fetched
                DriverCursor(conn).execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))
            index, known = self._next_index_and_known(cursor, keys, slots)
            for sub, payload_jcs, data, leaf in prepared:
                device = sub.device_id
                earlier = known.by_seq.get((device, sub.seq)) if device is not None else None
                rule = "seq"
                if earlier is None and device is not None and sub.minute is not None:
                    earlier, rule = known.by_minute.get((device, sub.minute)), "minute"
                if earlier is not None and earlier.entry is None:
                    # A resend of an entry whose payload was since dropped: it cannot be
                    # compared, and keeping it as evidence would store the payload again.
                    results.append(Appended(status="duplicate", entry=earlier))
                    continue
                if earlier is not None:
                    stored = earlier.entry_object()
                    if (
                        rule == "seq"
                        and stored["sig"] == sub.sig
                        and canonical_json(stored["payload"]) == payload_jcs
                    ):
                        results.append(Appended(status="duplicate", entry=earlier))
                        continue
                    evidence.append((device, sub.seq, earlier.index, data, received_at, rule))
                    assert device is not None and sub.seq is not None
                    conflict = ConflictError(
                        device, sub.seq, earlier.log_tag_id, rule=rule, minute=sub.minute
                    )
                    refused.append(conflict)
                    results.append(conflict)
                    continue
                row = (index, leaf, data, device, sub.seq, sub.contract, received_at, sub.minute)
                appended = _appended(row)
                new_rows.append(row)
                if device is not None:
                    known.add(appended.entry)
                results.append(appended)
                index += 1
            # Refusals carry where the device stands after this commit, so a device that
            # lost its own count can continue from there (docs/edge-recovery.md).
            for conflict in refused:
                conflict.last_seq, conflict.last_start = known.standing(
                    conflict.device_id, new_rows
                )
            if new_rows:
                if self._postgres:
                    columns = [list(c) for c in zip(*new_rows, strict=True)]
                    cursor.execute(ENTRIES_UNNEST, columns)
                else:
                    cursor.executemany(
                        f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        new_rows,
                    )
                first = new_rows[0][0]
                self._store_level(cursor, 0, first, [row[1] for row in new_rows])
                if self._postgres:
                    DriverCursor(conn).execute(f"NOTIFY {LOG_CHANNEL}")
            if evidence:
                cursor.executemany(
                    "INSERT INTO conflicts (device_id, seq, existing_idx, entry, received_at, "
                    "rule) VALUES (?, ?, ?, ?, ?, ?)",
                    evidence,
                )
            if within is not None:
                within(conn, submissions, results)
        return results

    def _next_index_and_known(
        self,
        cursor: DriverCursor,
        keys: set[tuple[str, int | None]],
        slots: set[tuple[str, str]],
    ) -> tuple[int, _Known]:
        """The next entry index, and the stored entries among `keys` and `slots` (resends)."""
        known = _Known()
        # Devices count up and move forward in time: only keys at or below a device's
        # highest recorded seq, and slots at or before its latest minute, can already exist,
        # and a resend is rare, so usually nothing is looked up one by one.
        devices = sorted({device for device, _ in keys})
        next_index = None
        for start in range(0, max(len(devices), 1), 400):
            batch_devices = devices[start : start + 400]
            # Two index seeks per device (a GROUP BY over an IN list would read every row),
            # and the next index in the same answer: one round trip. PostgreSQL takes the
            # devices as one array: a statement of one text whatever their number (prepared
            # once), and 4.8-5.4 us of the writer's CPU a device instead of 7.1-8.4.
            per_device = (
                "SELECT d, (SELECT max(seq) FROM entries WHERE device_id = k.d), "
                "(SELECT max(minute) FROM entries WHERE device_id = k.d AND minute IS NOT NULL) "
                "FROM {} UNION ALL "
            )
            params: tuple[Any, ...] = ()
            if not batch_devices:
                per_device = ""
            elif self._postgres:
                per_device = per_device.format("unnest(?::varchar[]) AS k(d)")
                params = (batch_devices,)
            else:
                marks = ", ".join(["(?)"] * len(batch_devices))
                per_device = f"WITH k(d) AS (VALUES {marks}) " + per_device.format("k")
                params = tuple(batch_devices)
            rows = cursor.execute(
                per_device + "SELECT NULL, (SELECT coalesce(max(idx) + 1, 0) FROM entries), NULL",
                params,
            ).fetchall()
            for device, top, latest in rows:
                if device is None:
                    next_index = top
                    continue
                if top is not None:
                    known.last_seq[device] = top
                if latest is not None:
                    known.last_minute[device] = latest
        assert next_index is not None
        wanted: list[tuple[str, int | str]] = [
            (device, seq)
            for device, seq in keys
            if device in known.last_seq and seq is not None and seq <= known.last_seq[device]
        ]
        wanted += [
            (device, minute)
            for device, minute in slots
            if device in known.last_minute and minute <= known.last_minute[device]
        ]
        for start in range(0, len(wanted), 400):
            batch = wanted[start : start + 400]
            by_seq = [key for key in batch if isinstance(key[1], int)]
            by_minute = [key for key in batch if isinstance(key[1], str)]
            # A join on a VALUES list, not a row-value IN, which SQLite answers by a full scan.
            lists, selects = [], []
            for name, part, column in (("ks", by_seq, "seq"), ("km", by_minute, "minute")):
                if part:
                    lists.append(f"{name}(d, v) AS (VALUES {', '.join(['(?, ?)'] * len(part))})")
                    selects.append(
                        f"SELECT {ENTRY_COLUMNS_E} FROM {name} "
                        f"JOIN entries e ON e.device_id = {name}.d AND e.{column} = {name}.v"
                    )
            rows = cursor.execute(
                f"WITH {', '.join(lists)} {' UNION ALL '.join(selects)}",
                tuple(value for key in by_seq + by_minute for value in key),
            ).fetchall()
            for row in rows:
                known.add(_stored_entry(row))
        return next_index, known

    def seal(self) -> StoredCheckpoint:
        """Sign a checkpoint over every entry appended so far (one sealer at a time).

        The new tree nodes are computed from a read snapshot, outside the write lock, so
        appends go on meanwhile (on SQLite a sealer holding the lock for the 50-100 ms
        that 10,000 leaves take stalled every commit); the write transaction only stores
        them and the checkpoint.
        """
        if self.signer is None:
            raise ValueError("this log was opened without a signing key")
        with self.engine.connect() as conn, conn.begin():
            latest = self._latest_checkpoint(conn)
            old_size = latest.tree_size if latest else 0
            new_size: int = conn.execute(
                select(func.coalesce(func.max(entries.c.idx) + 1, 0))
            ).scalar_one()
            if latest is not None and new_size == old_size:
                return latest
            # Entries are immutable and appends commit in index order, so [old, new) is final.
            leaves = self._read_level(conn, 0, old_size, new_size)
            created = merkle.new_nodes(old_size, leaves, lambda ids: self._fetch(conn, ids))

            def fetch(ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
                found, stored = {}, []
                for level, index in ids:
                    first, nodes = created.get(level, (0, []))
                    if first <= index < first + len(nodes):
                        found[level, index] = nodes[index - first]
                    else:
                        stored.append((level, index))
                found.update(self._fetch(conn, stored))
                return found

            root = merkle.tree_root(new_size, fetch)
        note = Checkpoint(origin=self.origin, tree_size=new_size, root_hash=root).sign(self.signer)
        sealed = StoredCheckpoint(
            tree_size=new_size, root_hash=root, note=note, created_at=rfc3339_utc(datetime.now(UTC))
        )
        with self._write() as conn, conn.begin():
            if self._postgres:
                # Sealers take turns: the next one then seals only what the last one missed,
                # so "seal now" never answers with a checkpoint older than its call.
                conn.execute(select(func.pg_advisory_xact_lock(SEAL_LOCK)))
            current = self._latest_checkpoint(conn)
            if current is not None and current.tree_size >= new_size:
                return current  # another sealer got as far meanwhile
            cursor = DriverCursor(conn)
            for level, (first, nodes) in created.items():
                if level:  # level 0 (the leaves) was stored by append
                    self._store_level(cursor, level, first, nodes)
            conn.execute(checkpoints.insert(), vars(sealed))
            if self._postgres:
                DriverCursor(conn).execute(f"NOTIFY {LOG_CHANNEL}")
        return sealed

    def _store_level(
        self, cursor: DriverCursor, level: int, start: int, hashes: list[bytes]
    ) -> None:
        """Write consecutive node hashes of one level, completing a partial first chunk.

        The first chunk keeps its stored prefix in SQL, so nothing is read first (on
        PostgreSQL a read would cost a round trip of the append's pipeline).
        """
        step = CHUNK_SIZE * merkle.HASH_SIZE
        first_chunk, offset = divmod(start, CHUNK_SIZE)
        data = b"".join(hashes)
        head = step - offset * merkle.HASH_SIZE  # what fits in the first chunk
        pieces = [data[:head]] + [data[p : p + step] for p in range(head, len(data), step)]
        rows = [
            (level, first_chunk + n, piece, offset * merkle.HASH_SIZE if n == 0 else 0)
            for n, piece in enumerate(pieces)
        ]
        cursor.executemany(
            "INSERT INTO merkle_chunks (level, chunk, hashes) VALUES (?, ?, ?) "
            "ON CONFLICT (level, chunk) DO UPDATE SET hashes = "
            f"CAST(substr(merkle_chunks.hashes, 1, ?) || excluded.hashes AS {self._blob})",
            rows,
        )

    def _read_level(self, conn: Connection, level: int, start: int, end: int) -> list[bytes]:
        """Node hashes [start, end) of one level."""
        if start >= end:
            return []
        first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        p = self._param
        rows = conn.exec_driver_sql(
            f"SELECT hashes FROM merkle_chunks WHERE level = {p} AND chunk >= {p} "
            f"AND chunk <= {p} ORDER BY chunk",
            (level, first, last),
        )
        data = b"".join(bytes(row[0]) for row in rows)
        size = merkle.HASH_SIZE
        base = first * CHUNK_SIZE
        hashes = [
            data[i : i + size] for i in range((start - base) * size, (end - base) * size, size)
        ]
        if len(hashes) != end - start or len(hashes[-1]) != size:
            raise NotFoundError(f"Merkle level {level} is missing nodes in [{start}, {end})")
        return hashes

    def _fetch(self, conn: Connection, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        wanted = set(ids)
        if not wanted:
            return {}
        chunk_keys = list({(level, index // CHUNK_SIZE) for level, index in wanted})
        p = self._param
        where = " OR ".join([f"(level = {p} AND chunk = {p})"] * len(chunk_keys))
        chunks = {
            (row[0], row[1]): bytes(row[2])
            for row in conn.exec_driver_sql(
                f"SELECT level, chunk, hashes FROM merkle_chunks WHERE {where}",
                tuple(value for key in chunk_keys for value in key),
            )
        }
        found: dict[NodeId, bytes] = {}
        for level, index in wanted:
            offset = (index % CHUNK_SIZE) * merkle.HASH_SIZE
            value = chunks.get((level, index // CHUNK_SIZE), b"")[offset : offset + 32]
            if len(value) != merkle.HASH_SIZE:
                raise NotFoundError(f"Merkle node ({level}, {index}) is not stored (not sealed?)")
            found[level, index] = value
        return found

    # -- dropping payloads (docs/retention.md) ------------------------------------------

    def payload_indexes(
        self,
        *,
        device_ids: Sequence[str],
        received_before: str | None = None,
        after: int = -1,
        limit: int = REDACT_BATCH,
    ) -> list[int]:
        """Indexes above `after` of entries of these devices that still carry a payload,
        oldest first, optionally only those received before an RFC 3339 time (same format,
        so the strings order as the times do)."""
        query = (
            select(entries.c.idx)
            .where(
                entries.c.idx > after,
                # Not through the device index: that reads every row of these devices for
                # each batch; walking the primary key from `after` reads each row once a run.
                func.coalesce(entries.c.device_id, "").in_(list(device_ids)),
                entries.c.entry.is_not(None),
            )
            .order_by(entries.c.idx)
            .limit(limit)
        )
        if received_before is not None:
            query = query.where(entries.c.received_at < received_before)
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def redact(
        self,
        indexes: Sequence[int],
        *,
        reason: str,
        reference: str,
        at: str | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Drop the payloads of these entries, each under a redaction row; returns how many
        were dropped (those already dropped are skipped). Leaf hashes and Merkle nodes stay.

        With `conn`, inside that (write) transaction: an erasure commits with the registry
        entry that records it.
        """
        if conn is None:
            with self._write() as own, own.begin():
                return self.redact(indexes, reason=reason, reference=reference, at=at, conn=own)
        at = at or rfc3339_utc(datetime.now(UTC))
        # The driver's cursor: inside an append, PostgreSQL runs in pipeline mode.
        cursor = DriverCursor(conn)
        if self._postgres:
            # Redactions take turns with appends and each other (re-entrant inside an
            # append, which holds the lock already); SQLite's write lock does the same.
            DriverCursor(conn).execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))
        dropped = 0
        for start in range(0, len(indexes), 500):
            batch = list(indexes[start : start + 500])
            marks = ", ".join(["?"] * len(batch))
            live = [
                row[0]
                for row in cursor.execute(
                    f"SELECT idx FROM entries WHERE idx IN ({marks}) AND entry IS NOT NULL", batch
                ).fetchall()
            ]
            if not live:
                continue
            # The redaction rows first: the database clears an entry only under one.
            cursor.executemany(
                "INSERT INTO redactions (idx, reason, reference, at) VALUES (?, ?, ?, ?)",
                [(i, reason, reference, at) for i in live],
            )
            marks = ", ".join(["?"] * len(live))
            cursor.execute(f"UPDATE entries SET entry = NULL WHERE idx IN ({marks})", live)
            dropped += len(live)
        return dropped

    def redaction(self, index: int) -> Redaction | None:
        """Why the payload of entry `index` was dropped, or None if it was not."""
        with self.engine.connect() as conn:
            row = conn.execute(select(redactions).where(redactions.c.idx == index)).first()
        if row is None:
            return None
        return Redaction(reason=row.reason, reference=row.reference, at=row.at)

    # -- reading -----------------------------------------------------------------------

    def size(self) -> int:
        """How many entries have been appended (sealed or not)."""
        with self.engine.connect() as conn:
            value: int = conn.execute(
                select(func.coalesce(func.max(entries.c.idx) + 1, 0))
            ).scalar_one()
            return value

    def _latest_checkpoint(self, conn: Connection) -> StoredCheckpoint | None:
        row = conn.execute(
            select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)
        ).first()
        return _stored_checkpoint(row) if row else None

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The newest checkpoint, or None before the first seal."""
        with self.engine.connect() as conn:
            return self._latest_checkpoint(conn)

    def checkpoint(self, tree_size: int) -> StoredCheckpoint:
        """The checkpoint at exactly `tree_size`."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(checkpoints).where(checkpoints.c.tree_size == tree_size)
            ).first()
        if row is None:
            raise NotFoundError(f"no checkpoint at tree size {tree_size}")
        return _stored_checkpoint(row)

    def checkpoints(self, *, after: int = -1, limit: int = 100) -> list[StoredCheckpoint]:
        """Checkpoints with tree size above `after`, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checkpoints)
                .where(checkpoints.c.tree_size > after)
                .order_by(checkpoints.c.tree_size)
                .limit(limit)
            )
            return [_stored_checkpoint(row) for row in rows]

    def entry(self, index: int) -> StoredEntry:
        """The entry at `index`."""
        with self.engine.connect() as conn:
            row = conn.execute(select(entries).where(entries.c.idx == index)).first()
        if row is None:
            raise NotFoundError(f"no entry at index {index}")
        return _stored_entry(row)

    def entry_by_tag(self, tag: str) -> StoredEntry:
        """The entry a log tag id names."""
        leaf = leaf_hash_of_tag(tag)
        with self.engine.connect() as conn:
            row = conn.execute(select(entries).where(entries.c.leaf_hash == leaf)).first()
        if row is None:
            raise NotFoundError(f"no entry with log tag id {tag}")
        return _stored_entry(row)

    def entries_at(self, indexes: Sequence[int]) -> dict[int, StoredEntry]:
        """The entries at these indexes (those that exist), by index."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(entries).where(entries.c.idx.in_(list(indexes))))
            return {row.idx: _stored_entry(row) for row in rows}

    def entries(self, *, start: int = 0, limit: int = 1000) -> list[StoredEntry]:
        """Entries from index `start` in log order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(entries).where(entries.c.idx >= start).order_by(entries.c.idx).limit(limit)
            )
            return [_stored_entry(row) for row in rows]

    def _sealed(self, conn: Connection, tree_size: int) -> None:
        row = conn.execute(
            select(checkpoints.c.tree_size).where(checkpoints.c.tree_size == tree_size)
        ).first()
        if row is None:
            raise NotFoundError(f"no checkpoint at tree size {tree_size}")

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """The audit path of entry `index` in the checkpointed tree of `tree_size`."""
        if not 0 <= index < tree_size:
            raise NotFoundError(f"entry {index} is not in a tree of size {tree_size}")
        with self.engine.connect() as conn:
            self._sealed(conn, tree_size)
            return merkle.inclusion_proof(index, tree_size, lambda ids: self._fetch(conn, ids))

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The proof that checkpoint `second` extends checkpoint `first`."""
        if not 0 <= first <= second:
            raise NotFoundError(f"no consistency proof from size {first} to size {second}")
        with self.engine.connect() as conn:
            self._sealed(conn, second)
            if first:
                self._sealed(conn, first)
            return merkle.consistency_proof(first, second, lambda ids: self._fetch(conn, ids))

    def anchors(self, *, tree_size: int | None = None) -> list[StoredAnchor]:
        """Recorded anchors, optionally of one checkpoint, oldest first."""
        query = select(anchors).order_by(anchors.c.tree_size, anchors.c.id)
        if tree_size is not None:
            query = query.where(anchors.c.tree_size == tree_size)
        with self.engine.connect() as conn:
            return [
                StoredAnchor(
                    tree_size=row.tree_size,
                    root_hash=bytes(row.root_hash),
                    chain_id=row.chain_id,
                    contract=row.contract,
                    tx_hash=row.tx_hash,
                    block_number=row.block_number,
                    confirmations=row.confirmations,
                    status=row.status,
                )
                for row in conn.execute(query)
            ]

    def bundle(self, tag: str, *, device_key: str | None) -> ProofBundle:
        """A `patio-proof/v1` bundle for the entry against the latest checkpoint; for an
        entry whose payload was dropped, the leaf hash and the redaction instead."""
        if self.signer is None:
            raise ValueError("bundles name the log key: open the log with its signing key")
        stored = self.entry_by_tag(tag)
        latest = self.latest_checkpoint()
        if latest is None or latest.tree_size <= stored.index:
            raise NotSealedError(f"entry {tag} is not covered by a checkpoint yet")
        size = latest.tree_size
        carried = [
            Anchor(
                chain_id=a.chain_id,
                tx_hash=a.tx_hash,
                block_number=a.block_number,
                contract=a.contract,
                tree_size=a.tree_size,
                root=a.root_hash,
                consistency=self.consistency_proof(a.tree_size, size),
            )
            for a in self.anchors()
            if a.status == "confirmed" and stored.index < a.tree_size <= size
        ]
        return ProofBundle(
            log_tag_id=stored.log_tag_id,
            leaf_index=stored.index,
            entry=None if stored.entry is None else stored.entry_object(),
            redacted=None if stored.entry is not None else self.redaction(stored.index),
            tree_size=size,
            hashes=self.inclusion_proof(stored.index, size),
            checkpoint=latest.note,
            log_key=self.signer.verifier_key,
            device_key=device_key,
            anchors=carried,
        )


LOG_KEY_FILE = "log.key"
DEFAULT_ORIGIN = "patio-ledger.local/log"


def open_data_dir(
    data_dir: Path, *, database_url: str | None = None, origin: str | None = None
) -> Log:
    """Open the log kept in `data_dir`, creating its signing key and SQLite file if new."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # keys and database: nobody else's
    key_path = data_dir / LOG_KEY_FILE
    if key_path.exists():
        signer = NamedKey.load(key_path)
    else:
        signer = NamedKey.generate(origin or DEFAULT_ORIGIN)
        signer.save(key_path)
    return Log.open(url=database_url_for(database_url, data_dir), signer=signer)
