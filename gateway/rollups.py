"""Rollups: hourly per-device, per-sensor energy sums kept in step with the ledger.

Written inside each append's transaction (Log.append `within`), so a rollup commits with
its entries or not at all. `rollup_progress.through_idx` says how far the log is rolled
up; whatever was appended without the hook (`patio log append`, an older gateway, the
bench with PATIO_ROLLUPS=0) is folded in by the next append that sees the gap, and by
`catch_up` at start. Every step that moves `through_idx` holds the append lock, so no
entry is counted twice. Only accepted `energy_minute@1` entries of registered devices
count: a duplicate or a conflict is never an outcome "accepted". The arithmetic is
contracts/energy/minute.py, shared with `patio report verify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, event

from contracts.base import Directory
from contracts.energy.hourly import HourlyRollup
from contracts.energy.minute import (
    CONTRACT,
    HourKey,
    HourTotals,
    Minutes,
    add_minutes,
    entry_minutes,
    extend_chain,
)
from ledger.bundle import log_tag_id
from ledger.encoding import parse_json
from ledger.errors import FormatError
from ledger.log import APPEND_LOCK, Appended, Submission
from ledger.storage import DriverCursor

BATCH = 5_000  # entries read per step when catching up or rebuilding
KEPT_MAX = 50_000  # (device, sensor, hour) chains a writer keeps in memory, at most
COLUMNS = (
    "device_id, hour, sensor, community_id, minutes, energy_mwh, peak_mw, peak_minute, "
    "first_idx, last_idx, entries, chain"
)
# A late minute adds to its hour: sums add, the peak is the higher one (the earlier minute
# of equal ones), the index range widens. SET reads the row as it was before the update.
NEW_PEAK = (
    "excluded.peak_mw IS NOT NULL AND (rollups.peak_mw IS NULL "
    "OR excluded.peak_mw > rollups.peak_mw "
    "OR (excluded.peak_mw = rollups.peak_mw AND excluded.peak_minute < rollups.peak_minute))"
)
# PostgreSQL takes the rows as one JSON array of row arrays, in one statement: a row of an
# executemany cost about 11 us of the writer's CPU there, and one array parameter per column
# (psycopg adapting every element in Python) 6 us; orjson writes the JSON in C (the writer's
# CPU per bench.gateway envelope of 8 readings: Rollups.write 64 -> 21 us at best). As
# jsonb, which the server parses once, where json's ->> scans an element's text again for
# every field: the server's CPU for the store statement, 100 hot rows a batch, fell from
# 28-30 to 22-23 us a row (2026-11-30, load 9).
JSON_ROWS = (
    "SELECT r->>0, (r->>1)::bigint, r->>2, r->>3, (r->>4)::int, (r->>5)::bigint, "
    "(r->>6)::bigint, (r->>7)::bigint, (r->>8)::bigint, (r->>9)::bigint, (r->>10)::int, "
    "decode(r->>11, 'hex') FROM jsonb_array_elements(?::jsonb) r"
)
VALUES = "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
UPSERT = (
    f"INSERT INTO rollups ({COLUMNS}) {{}} "
    "ON CONFLICT (community_id, hour, device_id, sensor) DO UPDATE SET "
    "minutes = rollups.minutes + excluded.minutes, "
    "energy_mwh = CASE WHEN excluded.energy_mwh IS NULL THEN rollups.energy_mwh "
    "WHEN rollups.energy_mwh IS NULL THEN excluded.energy_mwh "
    "ELSE rollups.energy_mwh + excluded.energy_mwh END, "
    f"peak_mw = CASE WHEN {NEW_PEAK} THEN excluded.peak_mw ELSE rollups.peak_mw END, "
    f"peak_minute = CASE WHEN {NEW_PEAK} THEN excluded.peak_minute "
    "ELSE rollups.peak_minute END, "
    "first_idx = CASE WHEN excluded.first_idx < rollups.first_idx "
    "THEN excluded.first_idx ELSE rollups.first_idx END, "
    "last_idx = CASE WHEN excluded.last_idx > rollups.last_idx "
    "THEN excluded.last_idx ELSE rollups.last_idx END, "
    "entries = rollups.entries + excluded.entries, chain = excluded.chain"
)
# The progress mark (the row whose device is NULL) and the chains of the rows a step
# touches, read before the upsert extends them, in one statement: every step holds the
# append lock, so no other writer moves either between this read and the upsert.
CHAINS = (
    "SELECT through_idx, NULL, NULL, NULL, NULL FROM rollup_progress WHERE id = 1 UNION ALL "
    "SELECT NULL, r.device_id, r.sensor, r.hour, r.chain FROM {} JOIN rollups r "
    "ON r.community_id = k.value->>0 AND r.hour = CAST(k.value->>1 AS BIGINT) "
    "AND r.device_id = k.value->>2 AND r.sensor = k.value->>3"
)
KEYS = {
    "postgresql": "jsonb_array_elements(CAST(? AS JSONB)) k(value)",
    "sqlite": "json_each(?) k CROSS",  # the keys drive the loop: one primary-key probe each
}
# A rollup's day marker (migration g0011): the highest log index any rollup of that
# community's UTC day was built from; a report's cached unit sums and digests are valid
# while the markers they were computed under are unchanged (gateway/routes/reports.py).
DAY_SECONDS = 86_400
DAY_CONFLICT = (
    "ON CONFLICT (community_id, day) DO UPDATE SET changed_idx = CASE "
    "WHEN excluded.changed_idx > rollup_days.changed_idx THEN excluded.changed_idx "
    "ELSE rollup_days.changed_idx END"
)
MARK_DAY = (
    f"INSERT INTO rollup_days (community_id, day, changed_idx) VALUES (?, ?, ?) {DAY_CONFLICT}"
)
THROUGH = "SELECT through_idx FROM rollup_progress WHERE id = 1"
SET_THROUGH = "UPDATE rollup_progress SET through_idx = ? WHERE id = 1"
# PostgreSQL: the upsert, the day markers and the progress mark in one statement (data-
# modifying CTEs), one round trip and one statement's overhead in the server instead of 3+.
STORE = (
    f"WITH batch ({COLUMNS}) AS ({JSON_ROWS}), "
    f"upserted AS ({UPSERT.format('SELECT * FROM batch')}), "
    "marked AS (INSERT INTO rollup_days (community_id, day, changed_idx) "
    f"SELECT community_id, hour / {DAY_SECONDS}, max(last_idx) FROM batch GROUP BY 1, 2 "
    f"{DAY_CONFLICT}) {SET_THROUGH}"
)
LOGGED = (
    "SELECT idx, device_id, contract, entry, leaf_hash FROM entries WHERE idx > ? AND idx < ? "
    "ORDER BY idx"
)


@dataclass(frozen=True, kw_only=True)
class Rebuilt:
    """What `Rollups.rebuild` did."""

    entries: int  # log entries read
    minutes: int  # energy_minute entries rolled up
    rows: int  # rollup rows written
    through_idx: int  # the last log index read (-1: an empty log)


class Rollups:
    """Keeps the `rollups` table in step with the ledger."""

    def __init__(self, engine: Engine, directory: Directory) -> None:
        self.engine = engine
        self.directory = directory
        self._postgres = engine.dialect.name == "postgresql"
        # The chains this writer stored, valid while the log is `_kept_size` entries long
        # (its last committed append left it so: nobody appended or rolled up since).
        self._kept: dict[HourKey, bytes | None] = {}
        self._kept_size = -1
        # The last write's chains, its transaction and the log size after it, until the
        # next write; kept only if that transaction's COMMIT was issued and nothing failed.
        self._pending: tuple[Connection, int, dict[HourKey, bytes | None]] | None = None
        self._committed = False
        self._listening = False

    # -- folding ------------------------------------------------------------------------

    def _fold(
        self,
        totals: dict[HourKey, HourTotals],
        communities: dict[str, str],
        index: int,
        device_id: str | None,
        minutes: Minutes,
        tag: bytes,
    ) -> bool:
        """Add one accepted energy_minute entry; False when it is not a registered device's."""
        if device_id is None:
            return False
        community = communities.get(device_id)
        if community is None:
            device = self.directory.device(device_id)
            if device is None:
                return False
            community = communities[device_id] = device.community_id
        add_minutes(totals, index, device_id, minutes, tag)
        return True

    def _fold_logged(
        self,
        cursor: DriverCursor,
        totals: dict[HourKey, HourTotals],
        communities: dict[str, str],
        after: int,
        before: int,
    ) -> tuple[int, int, int]:
        """Fold entries after..before (exclusive) as logged: (entries read, minutes, last idx)."""
        rows = cursor.execute(LOGGED, (after, before)).fetchall()
        minutes = 0
        for index, device_id, contract, data, leaf in rows:
            if contract != CONTRACT or data is None:  # None: payload dropped (docs/retention.md)
                continue
            try:
                payload = parse_json(bytes(data), what="entry").get("payload")
            except (FormatError, AttributeError):
                continue
            tag = log_tag_id(bytes(leaf)).encode()
            minutes += self._fold(
                totals, communities, index, device_id, entry_minutes(payload), tag
            )
        return len(rows), minutes, rows[-1][0] if rows else after

    def _store(
        self,
        cursor: DriverCursor,
        totals: dict[HourKey, HourTotals],
        communities: dict[str, str],
        through: int,
        chains: dict[HourKey, bytes | None],
    ) -> dict[HourKey, bytes | None]:
        """One upsert for every (device, sensor, hour) touched, its chain extended from
        `chains` (the stored ones), one per (community, UTC day) touched (its change marker),
        and the new progress mark; returns the chains stored."""
        extended = {key: extend_chain(chains.get(key, b""), t.tags) for key, t in totals.items()}
        rows = [
            (device_id, hour, sensor, communities[device_id], t.minutes, t.energy_mwh,
             t.peak_mw, t.peak_minute, t.first_idx, t.last_idx, t.entries,
             extended[device_id, sensor, hour])
            for (device_id, sensor, hour), t in totals.items()
        ]  # fmt: skip
        if self._postgres:
            hexed = [(*row[:11], None if row[11] is None else row[11].hex()) for row in rows]
            cursor.execute(STORE, (orjson.dumps(hexed).decode(), through))
            return extended
        days: dict[tuple[str, int], int] = {}
        for (device_id, _, hour), t in totals.items():
            day = (communities[device_id], hour // DAY_SECONDS)
            if days.get(day, -1) < t.last_idx:
                days[day] = t.last_idx
        if rows:
            cursor.executemany(UPSERT.format(VALUES), rows)
        if days:
            cursor.executemany(MARK_DAY, [(c, d, last) for (c, d), last in days.items()])
        cursor.execute(SET_THROUGH, (through,))
        return extended

    def _chains(
        self, cursor: DriverCursor, touched: Iterable[HourKey], communities: dict[str, str]
    ) -> tuple[int, dict[HourKey, bytes | None]]:
        """The progress mark, and the stored chains of the touched rows that exist (None:
        unknown, g0010)."""
        keys = [(communities[device], hour, device, sensor) for device, sensor, hour in touched]
        sql = CHAINS.format(KEYS[self.engine.dialect.name])
        through = -1
        chains: dict[HourKey, bytes | None] = {}
        for mark, device, sensor, hour, chain in cursor.execute(
            sql, (orjson.dumps(keys).decode(),)
        ).fetchall():
            if device is None:
                through = mark
            else:
                chains[(device, sensor, hour)] = None if chain is None else bytes(chain)
        return through, chains

    # -- the append hook, catch-up and rebuild --------------------------------------------

    def write(
        self, conn: Connection, submissions: Sequence[Submission], outcomes: Sequence[Any]
    ) -> None:
        """Roll up what an append accepts, inside its transaction (Log.append `within`)."""
        appended = [
            (submission, outcome)
            for submission, outcome in zip(submissions, outcomes, strict=True)
            if isinstance(outcome, Appended) and outcome.status == "accepted"
        ]
        if not appended:
            return
        appended.sort(key=lambda pair: pair[1].entry.index)  # log order: the chains follow it
        self._settle()
        cursor = DriverCursor(conn)
        totals: dict[HourKey, HourTotals] = {}
        communities: dict[str, str] = {}
        self._fold_appended(totals, communities, appended)
        first = appended[0][1].entry.index  # the log's size before this append
        through, chains = self._known_chains(cursor, totals, communities, first)
        if through < first - 1:  # appended without this hook since the last rollup: those
            totals.clear()  # come first in log order, so the chains fold them first
            self._fold_logged(cursor, totals, communities, through, first)
            self._fold_appended(totals, communities, appended)
            through, chains = self._chains(cursor, totals, communities)
        last = appended[-1][1].entry.index
        stored = self._store(cursor, totals, communities, last, chains)
        self._listen()
        self._pending, self._committed = (conn, last + 1, stored), False

    # -- the chains this writer stored --------------------------------------------------

    def _known_chains(
        self, cursor: DriverCursor, totals: dict[HourKey, HourTotals], communities: dict[str, str],
        first: int,
    ) -> tuple[int, dict[HourKey, bytes | None]]:  # fmt: skip
        """As `_chains`, but the chains this writer stored itself are not read again while
        the log is as long as its last committed append left it: the progress mark is then
        that append's last index, and no other step changed a rollup since."""
        if first != self._kept_size:
            # The log moved on without this writer: every chain kept may be stale, not only
            # those this append touches (it would otherwise keep them past its own commit).
            self._kept = {}
            return self._chains(cursor, totals, communities)
        kept = self._kept
        chains = {key: kept[key] for key in totals if key in kept}
        if len(chains) == len(totals):
            return first - 1, chains
        through, read = self._chains(cursor, [k for k in totals if k not in chains], communities)
        return through, chains | read

    def _settle(self) -> None:
        """Keep the last write's chains if its COMMIT was issued and nothing failed."""
        if self._pending is None:
            return
        _, size, stored = self._pending
        if not self._committed:
            self._forget()
            return
        if len(self._kept) + len(stored) > KEPT_MAX:  # bounded: all but the last write go
            self._kept = {}
        self._kept.update(stored)
        self._kept_size = size
        self._pending = None

    def _forget(self, *_: Any) -> None:
        """Trust nothing kept: the next writes read the chains from the database."""
        self._kept, self._kept_size, self._pending = {}, -1, None

    def _listen(self) -> None:
        """Follow the COMMITs on this engine (once, by the first write): a write whose
        transaction rolls back never sees its COMMIT issued."""
        if not self._listening:
            event.listen(self.engine, "commit", self._on_commit)
            # A failed COMMIT comes here after the commit event: it may or may not have
            # committed, so nothing kept is trusted (nor is anything after any other error).
            event.listen(self.engine, "handle_error", self._forget)
            self._listening = True

    def _on_commit(self, conn: Connection) -> None:
        if self._pending is not None and self._pending[0] is conn:
            self._committed = True

    def _fold_appended(
        self, totals: dict[HourKey, HourTotals], communities: dict[str, str],
        appended: list[tuple[Submission, Appended]],
    ) -> None:  # fmt: skip
        """Fold an append's accepted energy_minute entries, in log order."""
        for submission, outcome in appended:
            if submission.contract != CONTRACT:
                continue
            # The minutes the precheck derived (a pure function of the payload: no registry
            # state, so nothing can change them between precheck and commit).
            minutes = submission.derived
            if minutes is None:
                minutes = entry_minutes(submission.payload)
            if minutes:  # nothing to fold: no directory lookup either
                entry = outcome.entry
                tag = log_tag_id(entry.leaf_hash).encode()
                self._fold(totals, communities, entry.index, submission.device_id, minutes, tag)

    @contextmanager
    def _locked(self) -> Iterator[DriverCursor]:
        """A write transaction that holds the append lock, as Log.append does."""
        self._forget()  # it rewrites rollups this writer may have kept
        with self.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            cursor = DriverCursor(conn)
            if self._postgres:
                cursor.execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))
            yield cursor

    def _roll_forward(self, cursor: DriverCursor, through: int) -> tuple[int, int, int]:
        """Fold up to BATCH entries after `through`: (entries read, minutes, last index)."""
        totals: dict[HourKey, HourTotals] = {}
        communities: dict[str, str] = {}
        read, minutes, last = self._fold_logged(
            cursor, totals, communities, through, through + 1 + BATCH
        )
        if read:
            _, chains = self._chains(cursor, totals, communities)
            self._store(cursor, totals, communities, last, chains)
        return read, minutes, last

    def catch_up(self) -> int:
        """Roll up entries appended without the hook, a transaction per BATCH entries (what
        is done stays done after a crash); returns how many entries were read."""
        entries = 0
        while True:
            with self._locked() as cursor:
                read, _, _ = self._roll_forward(cursor, cursor.scalar(THROUGH))
            if not read:
                return entries
            entries += read

    def rebuild(self) -> Rebuilt:
        """Recompute every rollup from the log, in one transaction (appends wait meanwhile).

        Refused once payloads were dropped (docs/retention.md): the rollups are then the only
        record of those hours, and the log can no longer recompute them."""
        with self._locked() as cursor:
            if cursor.scalar("SELECT count(*) FROM redactions"):
                raise ValueError(
                    "entry payloads were dropped (retention or erasure): the rollups of those "
                    "hours cannot be recomputed from the log, so they are not rebuilt"
                )
            cursor.execute("DELETE FROM rollups")
            cursor.execute("DELETE FROM rollup_days")
            cursor.execute("DELETE FROM report_units")
            cursor.execute("DELETE FROM report_digests")
            entries = minutes = 0
            through = -1
            while True:
                read, folded, through = self._roll_forward(cursor, through)
                if not read:
                    break
                entries, minutes = entries + read, minutes + folded
            cursor.execute(SET_THROUGH, (through,))
            rows = cursor.scalar("SELECT count(*) FROM rollups")
        return Rebuilt(entries=entries, minutes=minutes, rows=rows, through_idx=through)


# -- reading them -------------------------------------------------------------------------

SELECT = (
    "SELECT device_id, sensor, hour, minutes, energy_mwh, peak_mw, peak_minute, first_idx, "
    "last_idx, entries, chain FROM rollups WHERE community_id = {} AND hour >= ? AND hour < ?{} "
    "ORDER BY community_id, hour, device_id, sensor"
)
# A device's community, for reading its rows by the primary key.
DEVICE_COMMUNITY = "(SELECT community_id FROM devices WHERE id = ?)"


def _seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone")
    return int(moment.timestamp())


def _query(
    engine: Engine, community: str, device: str | None, start: datetime, end: datetime
) -> list[HourlyRollup]:
    utc: dict[int, datetime] = {}  # hours repeat for every device and sensor: convert once

    def moment(seconds: int) -> datetime:
        found = utc.get(seconds)
        if found is None:
            found = utc[seconds] = datetime.fromtimestamp(seconds, UTC)
        return found

    args: tuple[str | int, ...]
    with engine.connect() as conn:
        if device is None:
            sql, args = SELECT.format("?", ""), (community, _seconds(start), _seconds(end))
        else:
            sql = SELECT.format(DEVICE_COMMUNITY, " AND device_id = ?")
            args = (device, _seconds(start), _seconds(end), device)
        rows = DriverCursor(conn).execute(sql, args).fetchall()
    return [
        HourlyRollup(
            device_id=device_id,
            sensor=sensor,
            hour=moment(hour),
            minutes=minutes,
            energy_mwh=energy_mwh,
            peak_mw=peak_mw,
            peak_minute=None if peak_minute is None else moment(peak_minute),
            first_idx=first_idx,
            last_idx=last_idx,
            entries=entries,
            chain=None if chain is None else bytes(chain),
        )
        for (device_id, sensor, hour, minutes, energy_mwh, peak_mw, peak_minute, first_idx,
             last_idx, entries, chain) in rows
    ]  # fmt: skip


def rollups_for(
    engine: Engine, community_id: str, start_utc: datetime, end_utc: datetime
) -> list[HourlyRollup]:
    """A community's rollups for the hours in [start_utc, end_utc), by hour, device, sensor."""
    return _query(engine, community_id, None, start_utc, end_utc)


def rollups_for_device(
    engine: Engine, device_id: str, start_utc: datetime, end_utc: datetime
) -> list[HourlyRollup]:
    """One device's rollups for the hours in [start_utc, end_utc), by hour and sensor."""
    return _query(engine, "", device_id, start_utc, end_utc)
