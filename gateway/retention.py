"""Retention (docs/retention.md): each community's policy, the periodic task that drops
payloads past it, and the erasure of one device's payloads, recorded on the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, select

from contracts.device_registry import REGISTRY_DEVICE, RegistryContract
from gateway.store import communities, devices
from ledger import merkle
from ledger.encoding import rfc3339_utc
from ledger.errors import ConflictError, LedgerError, NotFoundError
from ledger.keys import NamedKey
from ledger.log import Appended, Log, Submission
from ledger.storage import DriverCursor, entries, retention_policies

log = logging.getLogger(__name__)
REGISTRY = RegistryContract()
MAX_PAYLOAD_DAYS = 36_600  # a hundred years: beyond it a policy is a typo
ERASE_ATTEMPTS = 5  # each failed attempt means another registry entry took the seq
EVIDENCE_BATCH = 500  # conflicts' payloads dropped per statement


class RetentionError(LedgerError):
    """A retention request that cannot be carried out (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A community's retention policy."""

    community_id: str
    payload_days: int
    updated_at: str

    @property
    def reference(self) -> str:
        """How the redactions made under it name it."""
        return f"retention:{self.community_id}:{self.payload_days}d"


@dataclass(frozen=True, kw_only=True)
class Erased:
    """The outcome of an erasure: the registry entry recording it, the index range it
    covers, and how many payloads it dropped (those not dropped before)."""

    device_id: str
    log_tag_id: str
    first_index: int
    last_index: int
    dropped: int
    evidence_dropped: int  # refused resubmissions kept in `conflicts`


def set_policy(engine: Engine, community_id: str, payload_days: int) -> Policy:
    """Store a community's policy (replacing any); NotFoundError for an unknown community."""
    if not 1 <= payload_days <= MAX_PAYLOAD_DAYS:
        raise RetentionError(f"payload_days must be between 1 and {MAX_PAYLOAD_DAYS}")
    policy = Policy(
        community_id=community_id,
        payload_days=payload_days,
        updated_at=rfc3339_utc(datetime.now(UTC)),
    )
    with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        if conn.execute(select(communities.c.id).where(communities.c.id == community_id)).first():
            conn.execute(
                retention_policies.delete().where(retention_policies.c.community_id == community_id)
            )
            conn.execute(retention_policies.insert().values(vars(policy)))
            return policy
    raise NotFoundError(f"no community {community_id!r}")


def policy(engine: Engine, community_id: str) -> Policy | None:
    """A community's policy, or None if its payloads are kept."""
    with engine.connect() as conn:
        row = conn.execute(
            select(retention_policies).where(retention_policies.c.community_id == community_id)
        ).first()
    return None if row is None else Policy(**row._mapping)


def apply(log_: Log, *, now: datetime | None = None) -> dict[str, int]:
    """Drop every payload past its community's policy (received more than `payload_days`
    before `now`), a transaction per batch; returns how many per community."""
    now = now or datetime.now(UTC)
    with log_.engine.connect() as conn:
        policies = [Policy(**row._mapping) for row in conn.execute(select(retention_policies))]
    dropped: dict[str, int] = {}
    for item in policies:
        with log_.engine.connect() as conn:
            device_ids = list(
                conn.scalars(
                    select(devices.c.id).where(devices.c.community_id == item.community_id)
                )
            )
        cutoff = rfc3339_utc(now - timedelta(days=item.payload_days))
        count, after = 0, -1
        # From where the last batch ended: the rows before it need not be read again.
        while device_ids and (
            batch := log_.payload_indexes(
                device_ids=device_ids, received_before=cutoff, after=after
            )
        ):
            count += log_.redact(batch, reason="retention", reference=item.reference)
            after = batch[-1]
        if device_ids:
            with log_.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
                drop_evidence(
                    conn,
                    device_ids=device_ids,
                    received_before=cutoff,
                    reason="retention",
                    reference=item.reference,
                    at=rfc3339_utc(now),
                )
        dropped[item.community_id] = count
    return dropped


def drop_evidence(
    conn: Connection,
    *,
    device_ids: Sequence[str],
    reason: str,
    reference: str,
    at: str,
    received_before: str | None = None,
) -> int:
    """Drop the refused entries these devices left in `conflicts` (optionally only those
    received before an RFC 3339 time), each under a conflict_redactions row keeping its leaf
    hash; returns how many. Inside the caller's write transaction."""
    cursor = DriverCursor(conn)  # inside an erasure's append, PostgreSQL's pipeline
    marks = ", ".join(["?"] * len(device_ids))
    query = f"SELECT id, entry FROM conflicts WHERE device_id IN ({marks}) AND entry IS NOT NULL"
    params: list[str] = list(device_ids)
    if received_before is not None:
        query += " AND received_at < ?"
        params.append(received_before)
    dropped = 0
    while rows := cursor.execute(f"{query} ORDER BY id LIMIT {EVIDENCE_BATCH}", params).fetchall():
        # The redaction rows first: the database clears a conflict's entry only under one.
        cursor.executemany(
            "INSERT INTO conflict_redactions (conflict_id, leaf_hash, reason, reference, at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(row[0], merkle.leaf_hash(bytes(row[1])), reason, reference, at) for row in rows],
        )
        ids = [row[0] for row in rows]
        cursor.execute(
            f"UPDATE conflicts SET entry = NULL WHERE id IN ({', '.join(['?'] * len(ids))})", ids
        )
        dropped += len(ids)
    return dropped


def erase_device(
    log_: Log, *, signer: NamedKey, device_id: str, reason: str, now: datetime | None = None
) -> Erased:
    """Drop every payload of a device at once, recorded on the log in the same transaction by
    a registry entry `erase_device_payloads` signed with the registry key."""
    at = rfc3339_utc(now or datetime.now(UTC))
    for _ in range(ERASE_ATTEMPTS):
        erased = _erase_once(log_, signer=signer, device_id=device_id, reason=reason, at=at)
        if erased is not None:
            return erased
    raise RetentionError("the registry is being written concurrently; retry")


def _erase_once(
    log_: Log, *, signer: NamedKey, device_id: str, reason: str, at: str
) -> Erased | None:
    """One attempt; None if another registry entry took the seq meanwhile."""
    with log_.engine.connect() as conn:
        if conn.execute(select(devices.c.id).where(devices.c.id == device_id)).first() is None:
            raise NotFoundError(f"no device {device_id!r}")
        last_seq = conn.execute(
            select(func.max(entries.c.seq)).where(entries.c.device_id == REGISTRY_DEVICE)
        ).scalar_one()
        first, last = conn.execute(
            select(func.min(entries.c.idx), func.max(entries.c.idx)).where(
                entries.c.device_id == device_id
            )
        ).one()
    if first is None:
        raise RetentionError(f"device {device_id!r} has no entries to erase")
    # The range is fixed before signing: entries the device sends later are not covered.
    submission = REGISTRY.submission(
        signer=signer,
        seq=(last_seq or 0) + 1,
        action="erase_device_payloads",
        subject={"id": device_id, "first_index": first, "last_index": last, "reason": reason},
        at=at,
    )
    dropped: list[int] = []
    evidence: list[int] = []

    def within(
        conn: Connection, _: Sequence[Submission], outcomes: list[Appended | ConflictError]
    ) -> None:
        [outcome] = outcomes
        if not isinstance(outcome, Appended) or outcome.status != "accepted":
            return  # the seq was taken meanwhile: nothing is dropped
        # The driver's cursor: on PostgreSQL the append runs in pipeline mode.
        indexes = [
            row[0]
            for row in DriverCursor(conn)
            .execute(
                "SELECT idx FROM entries WHERE device_id = ? AND idx >= ? AND idx <= ? "
                "AND entry IS NOT NULL",
                (device_id, first, last),
            )
            .fetchall()
        ]
        reference = outcome.entry.log_tag_id
        dropped.append(
            log_.redact(indexes, reason="erasure", reference=reference, at=at, conn=conn)
        )
        evidence.append(
            drop_evidence(
                conn, device_ids=[device_id], reason="erasure", reference=reference, at=at
            )
        )

    [outcome] = log_.append([submission], within=within)
    if not isinstance(outcome, Appended) or outcome.status != "accepted":
        return None
    return Erased(
        device_id=device_id,
        log_tag_id=outcome.entry.log_tag_id,
        first_index=first,
        last_index=last,
        dropped=dropped[0],
        evidence_dropped=evidence[0],
    )


class RetentionTask:
    """Applies every policy every `interval` seconds in the gateway process."""

    def __init__(self, log_: Log, *, interval: float) -> None:
        self.log = log_
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the current event loop."""
        self._task = asyncio.create_task(self._run(), name="patio-retention")

    async def stop(self) -> None:
        """Stop after the batch under way, if any."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                dropped = await asyncio.to_thread(apply, self.log)
                if any(dropped.values()):
                    log.info("retention dropped payloads: %s", dropped)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: try again next interval
                log.exception("retention run failed; retrying at the next interval")
            await asyncio.sleep(self.interval)
