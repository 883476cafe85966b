"""The durable outbox: seq allocation, signing, retries with backoff, acks and dead letters."""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge.aggregate import energy_minute
from edge.database import Store, to_ms
from edge.errors import DeliveryError, EdgeError
from edge.transports import OutboxItem, Result, Transport
from ledger.encoding import canonical_json, parse_json
from ledger.keys import NamedKey

log = logging.getLogger("patio.edge.outbox")

NEXT_SEQ = "next_seq"


@dataclass(frozen=True)
class FlushReport:
    """What one flush did."""

    delivered: int = 0
    dead: int = 0
    error: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class OutboxStatus:
    """Counts for `patio edge status`."""

    pending: dict[str, int]
    acked: int
    dead: int
    next_seq: int
    oldest_pending_ms: int | None
    dead_letters: list[dict[str, Any]]


class Outbox:
    """Signed submissions that stay until the gateway acknowledges them.

    A seq is allocated, the payload signed and the row stored in one SQLite transaction
    (synchronous=FULL), together with the aggregation cursor: a seq either belongs to
    exactly one stored envelope, which is sent until acknowledged, or was never handed
    out. Nothing is sent before its row is committed, so a crash cannot reuse a seq that
    the gateway has seen.
    """

    def __init__(
        self,
        *,
        store: Store,
        key: NamedKey | None,
        device_id: str,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.device_id = device_id
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self.failures = 0
        self.next_attempt = float("-inf")

    # Adding (inside the caller's transaction).

    def _allocate_seq(self) -> int:
        db = self.store.connection
        stored = self.store.get_state(NEXT_SEQ)
        # Never below anything already used, whatever happened to the state row.
        used = db.execute(
            "SELECT max(seq) FROM (SELECT max(seq) AS seq FROM outbox "
            "UNION ALL SELECT max(seq) FROM dead_letters)"
        ).fetchone()[0]
        seq = max(int(stored) if stored else 1, (used or 0) + 1)
        self.store.set_state(NEXT_SEQ, str(seq + 1))
        return seq

    def _signer(self) -> NamedKey:
        if self.key is None:
            raise EdgeError("this outbox was opened without the device key: it cannot sign")
        return self.key

    def _insert(self, seq: int, contract: str, start_ms: int, body: bytes) -> None:
        self.store.connection.execute(
            "INSERT INTO outbox (seq, contract, start_ms, body, created_ms) VALUES (?, ?, ?, ?, ?)",
            (seq, contract, start_ms, body, to_ms(time.time())),
        )

    def add_minute(self, start_ms: int, readings: Mapping[str, Any], seq: int | None = None) -> int:
        """Sign and store one energy_minute envelope; returns its seq (`seq` when given: a
        number the caller keeps apart from the ones this outbox allocates, see gateway/demo.py)."""
        seq = self._allocate_seq() if seq is None else seq
        payload = energy_minute(
            device_id=self.device_id, seq=seq, start_ms=start_ms, readings=readings
        )
        body = self._signed("energy_minute", {"payload": payload}, seq)
        self._insert(seq, "energy_minute", start_ms, body)
        return seq

    def add_legacy(self, start_ms: int, data_to_store: Mapping[str, str]) -> int:
        """Sign and store one Patio patio_save_energy request body; returns its seq."""
        seq = self._allocate_seq()
        body = {"data": {"dataToStore": dict(data_to_store)}, "keys": {"device_id": self.device_id}}
        self._insert(
            seq, "patio_save_energy", start_ms, self._signed("patio_save_energy", body, seq)
        )
        return seq

    def _signed(self, contract: str, body: dict[str, Any], seq: int) -> bytes:
        """The body to send for `contract`, numbered `seq` and signed (a new or renumbered item)."""
        if contract == "energy_minute":
            payload = {**body["payload"], "seq": seq}
            return canonical_json({"payload": payload, "sig": self._signer().sign_payload(payload)})
        data = body["data"]["dataToStore"]
        signed = {"device_id": self.device_id, "seq": seq, "dataToStore": data}
        keys = {"device_id": self.device_id, "seq": seq, "sig": self._signer().sign_payload(signed)}
        return canonical_json({"data": {"dataToStore": data}, "keys": keys})

    def _renumber(self, db: sqlite3.Connection, refused: Sequence[Result]) -> int:
        """Continue after the ledger's count: items refused as seq conflicts (the gateway
        holds other entries under their seqs) get fresh seqs above every seq this database
        or the gateway has used, and are signed again. Returns how many.

        Only items whose own refusal came back: another pending item may be in flight (MQTT)
        and recorded under its seq already, which its own answer will say.
        """
        last = max(refused, key=lambda r: r.last_seq or 0)
        last_seq = last.last_seq or 0
        wanted = [r.seq for r in refused]
        rows = db.execute(
            "SELECT seq, contract, body FROM outbox WHERE acked_ms IS NULL AND seq IN "
            f"({', '.join('?' * len(wanted))}) ORDER BY seq",
            wanted,
        ).fetchall()
        if not rows:
            return 0
        used = db.execute(
            "SELECT max(seq) FROM (SELECT max(seq) AS seq FROM outbox "
            "UNION ALL SELECT max(seq) FROM dead_letters)"
        ).fetchone()[0]
        # Above every seq used here too, so a late answer for an old number finds no row.
        first = max(last_seq, used or 0) + 1
        for offset, (seq, contract, body) in enumerate(rows):
            fresh = self._signed(
                contract, parse_json(bytes(body), what="outbox item"), first + offset
            )
            db.execute(
                "UPDATE outbox SET seq = ?, body = ? WHERE seq = ?", (first + offset, fresh, seq)
            )
        self.store.set_state(NEXT_SEQ, str(first + len(rows)))
        log.warning(
            "the gateway already holds seq %d and minutes up to %s for %s: this database lost "
            "count (reinstalled?); %d refused items renumbered from seq %d and signed again",
            last_seq, last.last_start or "none", self.device_id, len(rows), first,
        )  # fmt: skip
        return len(rows)

    # Sending.

    def pending(self, contract: str, limit: int) -> list[OutboxItem]:
        """The oldest unacknowledged items of one contract, by seq."""
        rows = self.store.connection.execute(
            "SELECT seq, contract, start_ms, body FROM outbox "
            "WHERE acked_ms IS NULL AND contract = ? ORDER BY seq LIMIT ?",
            (contract, limit),
        )
        return [OutboxItem(seq, c, start, bytes(body)) for seq, c, start, body in rows]

    def backoff_delay(self, failures: int) -> float:
        """Exponential backoff with equal jitter: uniform in [d/2, d], d = base * 2^(n-1)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(failures - 1, 60))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def flush(self, transport: Transport, now: float, *, budget_s: float = 2.0) -> FlushReport:
        """Offer pending items until the outbox is empty, the budget is spent, or a failure."""
        if transport.resumed():
            self.next_attempt = float("-inf")
        if now < self.next_attempt:
            return FlushReport(skipped=True)
        deadline = time.monotonic() + budget_s
        delivered = dead = 0
        while True:
            items = self.pending(transport.contract, transport.batch_size)
            if not items:
                break
            try:
                results = transport.exchange(items, now)
            except DeliveryError as exc:
                d, x = self.apply(exc.results, now)
                self.failures += 1
                delay = self.backoff_delay(self.failures)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.backoff_max_s))
                self.next_attempt = now + delay
                log.warning("delivery failed (%s); retry %d in %.1f s", exc, self.failures, delay)
                return FlushReport(delivered + d, dead + x, str(exc))
            d, x = self.apply(results, now)
            delivered, dead = delivered + d, dead + x
            if self.failures:
                log.info("delivery works again after %d failed attempts", self.failures)
            self.failures = 0
            if not transport.synchronous or time.monotonic() >= deadline:
                break
        return FlushReport(delivered, dead)

    def apply(self, results: Sequence[Result], now: float) -> tuple[int, int]:
        """Record answers: delivered items are acked, refused ones move to dead letters, and a
        seq conflict renumbers what is pending (docs/edge-recovery.md)."""
        delivered = dead = 0
        if not results:
            return 0, 0
        now_ms = to_ms(now)
        lost_count: list[Result] = []
        with self.store.transaction() as db:
            for result in results:
                if result.delivered:
                    cursor = db.execute(
                        "UPDATE outbox SET acked_ms = ?, ack_status = ?, log_tag_id = ? "
                        "WHERE seq = ? AND acked_ms IS NULL",
                        (now_ms, result.status, result.log_tag_id, result.seq),
                    )
                    delivered += cursor.rowcount
                    continue
                if result.rule == "seq" and result.last_seq is not None:
                    # Never acknowledged, yet the gateway holds this seq: another item of this
                    # device has it. Not a bad item: it gets a new number below.
                    lost_count.append(result)
                    continue
                error = result.error or "rejected without a reason"
                cursor = db.execute(
                    "INSERT OR REPLACE INTO dead_letters"
                    " (seq, contract, start_ms, body, error, dead_ms)"
                    " SELECT seq, contract, start_ms, body, ?, ? FROM outbox"
                    " WHERE seq = ? AND acked_ms IS NULL",
                    (error, now_ms, result.seq),
                )
                if cursor.rowcount:
                    db.execute("DELETE FROM outbox WHERE seq = ?", (result.seq,))
                    dead += 1
                    if result.rule == "minute":
                        log.error("seq %d: its minute is already in the ledger (last recorded "
                                  "minute %s); moved to dead letters: %s",
                                  result.seq, result.last_start, error)  # fmt: skip
                    else:
                        log.error("seq %d refused permanently, moved to dead letters: %s",
                                  result.seq, error)  # fmt: skip
            if lost_count:
                self._renumber(db, lost_count)
        return delivered, dead

    # Housekeeping and reports.

    def prune_acked(self, before_ms: int) -> int:
        """Forget acknowledged items older than `before_ms`."""
        with self.store.transaction() as db:
            return db.execute(
                "DELETE FROM outbox WHERE acked_ms IS NOT NULL AND acked_ms < ?", (before_ms,)
            ).rowcount

    def requeue_dead(self) -> int:
        """Put every dead letter back in the outbox, same seq and bytes (after a fix)."""
        with self.store.transaction() as db:
            moved = db.execute(
                "INSERT INTO outbox (seq, contract, start_ms, body, created_ms) "
                "SELECT seq, contract, start_ms, body, dead_ms FROM dead_letters"
            ).rowcount
            db.execute("DELETE FROM dead_letters")
        self.next_attempt = float("-inf")
        return moved

    def status(self, *, dead_limit: int = 10) -> OutboxStatus:
        """Counts of pending, acked and dead items, and the latest dead letters."""
        db = self.store.connection
        pending = dict(
            db.execute(
                "SELECT contract, count(*) FROM outbox WHERE acked_ms IS NULL GROUP BY contract"
            ).fetchall()
        )
        acked = db.execute("SELECT count(*) FROM outbox WHERE acked_ms IS NOT NULL").fetchone()[0]
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        oldest = db.execute("SELECT min(start_ms) FROM outbox WHERE acked_ms IS NULL").fetchone()[0]
        letters = [
            {"seq": seq, "contract": contract, "start_ms": start, "error": error}
            for seq, contract, start, error in db.execute(
                "SELECT seq, contract, start_ms, error FROM dead_letters ORDER BY seq DESC LIMIT ?",
                (dead_limit,),
            )
        ]
        stored = self.store.get_state(NEXT_SEQ)
        return OutboxStatus(
            pending=pending,
            acked=acked,
            dead=dead,
            next_seq=int(stored) if stored else 1,
            oldest_pending_ms=oldest,
            dead_letters=letters,
        )
