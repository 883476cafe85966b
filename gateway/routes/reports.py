"""Energy reports: a community's period from its rollups, bound to one signed checkpoint.

A report is exactly "the log up to tree size N", N the newest checkpoint's: everything is
read in one snapshot (SQLite's read transaction, PostgreSQL's REPEATABLE READ); the inputs
come from the registry entries below N (contracts/energy/provenance.py); rollups built only
from entries below N (`last_idx < N`) are used as they are, and the few touched by an entry
at N or later (the hour in progress, a late minute) are recomputed from their entries below
N with the same arithmetic (contracts/energy/minute.py).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import operator
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from contracts.energy.aggregate import add, units
from contracts.energy.csv import render_csv
from contracts.energy.errors import EnergyError
from contracts.energy.hourly import HourlyRollup
from contracts.energy.minute import (
    CONTRACT,
    HourKey,
    HourTotals,
    add_entry,
    extend_chain,
    hourly_rollup,
)
from contracts.energy.periods import PeriodKind, custom_period, period_of, zone_named
from contracts.energy.provenance import (
    PROVENANCE_FORMAT,
    CommunityInputs,
    DayDigest,
    RollupLine,
    community_inputs,
    day_digest,
    entries_digest,
    local_days,
)
from contracts.energy.report import build_report, rollup_ranges
from gateway.deps import GatewayDep, ReaderDep
from gateway.problems import Problem
from gateway.rollups import DAY_SECONDS, Rollups
from ledger.bundle import log_tag_id
from ledger.encoding import parse_json
from ledger.errors import FormatError
from ledger.registry_replay import REGISTRY_DEVICE, Registry, RegistryEntry, replay
from ledger.storage import DriverCursor

router = APIRouter(prefix="/v1", tags=["reports"])

DESCRIPTION = """\
A community's energy over a day, ISO week, month or year (`period` and `date`), or a custom
range (`from` and `to`, both inclusive: up to 2 days in hourly rows, up to 35 days daily,
longer monthly), in the community's IANA time zone: a day has 24 hourly rows (23 and 25 on
DST change days), a week 7 daily rows from Monday, a month a row per day, a year 12 rows.
Per row and in total: generated, consumed, grid import and export, net (kWh, exact decimal
strings), self-consumption and self-sufficiency, peak power and its minute, expected and
missing minutes, cost under the community's tariff; a per-device breakdown that adds up
exactly to the totals; the previous period and the same period a year before, with percent
changes (`null` and a reason when the earlier value is zero or has no readings).

Definitions (Home Assistant's energy dashboard):

* net = grid import − grid export
* self-consumption = max(0, generated − grid export) / generated (`null` when nothing was
  generated or no generation or grid_export sensor is declared)
* self-sufficiency = 1 − min(1, grid import / consumption), consumption being the measured
  `consumption` sensors if any is declared, else grid import + generated − grid export
  (`null` without a grid_import sensor or when consumption is not positive)

`Accept: text/csv` gives the same report as CSV (one row per bucket and a total row).
`provenance` names the signed checkpoint the report was computed against (its note and tree
size N), every input taken from the registry below N, and the energy_minute entries used
below N: their count and a digest of their log tag ids (SHA-256 chained over the tag ids in
log order per hourly rollup, the rollups' lines digested per local day, the days' lines
digested; docs/reports.md), `null` where a rollup's chain is unknown.
`patio report verify` recomputes the report from the log (docs/reports.md).
"""

DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
SNAPSHOT = {"postgresql": "REPEATABLE READ"}
# The rollups below the checkpoint summed per unit (contracts/energy/aggregate.py) in the
# database, in one pass: sums, the highest peak, and the earliest minute that reached it,
# found as the MAX of peak * 2^16 + (2^16 - 1 - minutes from the unit's first hour); a unit
# spans at most a local month (< 2^16 minutes). A peak of 2^47 mW or more (140 GW) would
# overflow that: such a unit's minute is looked up on its own (`_peak_minute`). A unit's
# log index range is not summed: build_report never reads it.
SUMS = """
SELECT r.device_id, r.sensor, u.unit, SUM(r.minutes), CAST(SUM(r.energy_mwh) AS BIGINT),
       MAX(r.peak_mw),
       MAX(CASE WHEN r.peak_mw > -140737488355328 AND r.peak_mw < 140737488355328
           THEN r.peak_mw * 65536 + (65535 - (r.peak_minute - u.unit) / 60) END)
"""
# PostgreSQL hashes a span's rows per (device, sensor, unit) in one pass, each hour's unit
# read from an array of the span's units by the hour's offset: no join to sort or hash
# (bench/reports.py's year: 0.77-0.83 s with a join to unnest(hours, units), 0.36-0.41 s).
AGGREGATE = (
    SUMS.replace("u.unit", "r.unit")
    + """
FROM (SELECT r.*, (CAST(? AS BIGINT[]))[(r.hour - ?) / 3600 + 1] AS unit FROM rollups r
      WHERE r.community_id = ? AND r.hour >= ? AND r.hour < ? AND r.last_idx < ?) r
GROUP BY r.device_id, r.sensor, r.unit
"""
)
# SQLite has no hash aggregate: grouping a year's million rows at once sorts them all
# (0.89 s of CPU on bench/reports.py's data); one unit at a time sorts a few hundred rows
# each, its hours found through the unit's index (0.50 s).
UNIT_AGGREGATE = (
    SUMS
    + """
FROM report_unit_hours u CROSS JOIN rollups r ON r.community_id = ? AND r.hour = u.hour
WHERE u.unit = ? AND r.last_idx < ?
GROUP BY r.device_id, r.sensor
"""
)
# Hours that are units of their own (a day's hourly buckets, the hour in progress) need no
# grouping: their rows are read as they are, in HourlyRollup's order of fields.
SINGLE_HOURS = """
SELECT r.device_id, r.sensor, r.hour, r.minutes, r.energy_mwh, r.peak_mw, r.peak_minute
FROM rollups r WHERE r.community_id = ? AND r.hour >= ? AND r.hour < ? AND r.last_idx < ?
"""
PEAK_MINUTE = (
    "SELECT min(r.peak_minute) FROM rollups r WHERE r.community_id = ? AND r.device_id = ? "
    "AND r.sensor = ? AND r.peak_mw = ? AND r.last_idx < ? AND r.hour IN ({})"
)


# The registry of the last report: its entries' rows, the entries, what they replay to and
# each community's inputs from it. Every report reads the rows (a redaction may clear one;
# the next checkpoint may add some) and parses and replays them only when they differ:
# the same rows always give the same registry, whichever database they came from.
_Memo = tuple[
    list[tuple[int, bytes]], list[RegistryEntry], Registry, dict[str, CommunityInputs | None]
]
_last_registry: _Memo | None = None


def _registry(cursor: DriverCursor, tree_size: int) -> _Memo:
    """The registry entries below `tree_size`, replayed (the last report's when unchanged)."""
    global _last_registry
    rows = [
        (index, bytes(data))
        for index, data in cursor.execute(
            "SELECT idx, entry FROM entries WHERE device_id = ? AND idx < ? ORDER BY idx",
            (REGISTRY_DEVICE, tree_size),
        ).fetchall()
    ]
    memo = _last_registry  # one read: another thread may replace it meanwhile
    if memo is not None and memo[0] == rows:
        return memo
    found = []
    for index, data in rows:
        try:
            payload = parse_json(data, what=f"entry {index}").get("payload")
        except (FormatError, AttributeError):
            payload = None
        found.append(RegistryEntry(index=index, payload=payload))
    memo = _last_registry = (rows, found, replay(found)[0], {})
    return memo


def _group(
    cursor: DriverCursor, community_id: str, unit_of: dict[int, int], tree_size: int,
    postgres: bool,
) -> list[Any]:  # fmt: skip
    """Rollups below `tree_size` summed per (device, sensor, unit) for units of 2+ hours."""
    if not unit_of:
        return []
    if postgres:
        # A unit whose hours fall in two spans comes back once from each: added up here as
        # SQL would (SUM and MAX skip NULLs, SUM of NULLs alone is NULL).
        merged: dict[tuple[str, str, int], list[Any]] = {}
        for start, end in _spans(unit_of):  # the periods' ranges, not the year between them
            span_units = [unit_of[hour] for hour in range(start, end, 3600)]
            for row in cursor.execute(
                AGGREGATE, (span_units, start, community_id, start, end, tree_size)
            ).fetchall():
                known = merged.get((row[0], row[1], row[2]))
                if known is None:
                    merged[(row[0], row[1], row[2])] = list(row)
                    continue
                known[3] += row[3]
                known[4] = _either(known[4], row[4], operator.add)
                known[5] = _either(known[5], row[5], max)
                known[6] = _either(known[6], row[6], max)
        return list(merged.values())
    cursor.execute(
        "CREATE TEMP TABLE IF NOT EXISTS report_unit_hours (unit INTEGER, hour INTEGER, "
        "PRIMARY KEY (unit, hour)) WITHOUT ROWID"
    )
    cursor.execute("DELETE FROM report_unit_hours")
    cursor.executemany(
        "INSERT INTO report_unit_hours VALUES (?, ?)", [(u, h) for h, u in unit_of.items()]
    )
    return [
        row
        for unit in sorted(set(unit_of.values()))
        for row in cursor.execute(UNIT_AGGREGATE, (community_id, unit, tree_size)).fetchall()
    ]


def _stamp(utc_days: list[int], markers: dict[int, int], tree_size: int) -> str | None:
    """The day markers (`rollup_days`) a value computed over `utc_days` is kept under, as
    text; None when a rollup of those days may be newer than the checkpoint."""
    marks = [markers.get(day, -1) for day in utc_days]
    if max(marks) >= tree_size:
        return None
    return orjson.dumps([utc_days, marks]).decode()


def _either(known: Any, more: Any, combine: Callable[[Any, Any], Any]) -> Any:
    """Two partial SUMs or MAXes of SQL combined, NULL standing for no value."""
    if known is None or more is None:
        return more if known is None else known
    return combine(known, more)


def _chunks(unit_of: dict[int, int], zone: ZoneInfo) -> list[dict[int, int]]:
    """`unit_of` split by the local month of each unit's first hour, in time order: what
    `report_units` caches one row of. A unit never leaves its local month
    (contracts/energy/aggregate.py), so a chunk is a month's hours, one span to sum."""
    month_of: dict[int, tuple[int, int]] = {}
    chunks: dict[tuple[int, int], dict[int, int]] = {}
    for hour, unit in sorted(unit_of.items()):
        month = month_of.get(unit)
        if month is None:
            first = datetime.fromtimestamp(unit, zone)
            month = month_of[unit] = (first.year, first.month)
        chunks.setdefault(month, {})[hour] = unit
    return list(chunks.values())


def _sums(
    cursor: DriverCursor, community_id: str, unit_of: dict[int, int], tree_size: int,
    postgres: bool, markers: dict[int, int], stores: list[tuple[str, str, str, str]],
    zone: ZoneInfo,
) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """The rollups below `tree_size` of the units of one hour, as SINGLE_HOURS's rows, and
    of the other units summed per (device, sensor, unit), as AGGREGATE's rows.

    A chunk of units whose UTC days' markers (`rollup_days`) are all below `tree_size` has
    no rollup the checkpoint does not cover; its sums are read from `report_units` when they
    were summed under the same markers (no rollup of those days changed since), else summed
    here and appended to `stores` for `compute` to keep once its days are over."""
    sizes = Counter(unit_of.values())
    single = {hour: unit for hour, unit in unit_of.items() if sizes[unit] == 1}
    singles = [
        row
        for start, end in _spans(single)
        for row in cursor.execute(SINGLE_HOURS, (community_id, start, end, tree_size)).fetchall()
    ]
    rows: list[Any] = []
    today = int(datetime.now(UTC).timestamp()) // DAY_SECONDS
    to_sum: dict[int, int] = {}  # the hours summed here, in one _group (a few queries)
    keep: dict[int, tuple[str, str]] = {}  # a unit of a chunk to keep -> (digest, markers)
    for chunk in _chunks({hour: unit for hour, unit in unit_of.items() if sizes[unit] > 1}, zone):
        utc_days = sorted({hour // DAY_SECONDS for hour in chunk})
        to_sum.update(chunk)
        if (stamp := _stamp(utc_days, markers, tree_size)) is None:
            continue
        digest = hashlib.sha256(orjson.dumps(sorted(chunk.items()))).hexdigest()
        cached = cursor.execute(
            "SELECT markers, sums FROM report_units WHERE community_id = ? AND chunk_sha256 = ?",
            (community_id, digest),
        ).fetchone()
        if cached is not None and cached[0] == stamp:
            rows += orjson.loads(cached[1])
            for hour in chunk:
                del to_sum[hour]
        elif utc_days[-1] < today:  # today's markers move with every batch
            keep.update(dict.fromkeys(chunk.values(), (digest, stamp)))
    kept: dict[tuple[str, str], list[list[Any]]] = {key: [] for key in keep.values()}
    for row in _group(cursor, community_id, to_sum, tree_size, postgres):
        rows.append(row)
        if row[2] in keep:
            kept[keep[row[2]]].append(list(row))
    stores += [(community_id, digest, stamp, orjson.dumps(summed).decode())
               for (digest, stamp), summed in kept.items()]  # fmt: skip
    return singles, rows


def _spans(unit_of: dict[int, int]) -> list[tuple[int, int]]:
    """The runs of consecutive hours in `unit_of`, as [start, end) Unix seconds."""
    spans: list[tuple[int, int]] = []
    for hour in sorted(unit_of):
        if spans and spans[-1][1] == hour:
            spans[-1] = (spans[-1][0], hour + 3600)
        else:
            spans.append((hour, hour + 3600))
    return spans


def _day_markers(
    cursor: DriverCursor, community_id: str, ranges: list[tuple[datetime, datetime]]
) -> dict[int, int]:
    """The day markers (`rollup_days`) of the UTC days `ranges` touch: a day report's
    three short ranges, not the year between them."""
    markers: dict[int, int] = {}
    for start, end in ranges:
        first = int(start.timestamp()) // DAY_SECONDS
        last = (int(end.timestamp()) - 1) // DAY_SECONDS
        markers.update(
            cursor.execute(
                "SELECT day, changed_idx FROM rollup_days WHERE community_id = ? "
                "AND day >= ? AND day <= ?",
                (community_id, first, last),
            ).fetchall()
        )
    return markers


def _rollups(
    cursor: DriverCursor, inputs: CommunityInputs, unit_of: dict[int, int], tree_size: int,
    postgres: bool, markers: dict[int, int], stores: list[tuple[str, str, str, str]],
    recomputed: dict[HourKey, HourTotals],
) -> list[HourlyRollup]:  # fmt: skip
    """The community's rollups summed per unit, as the log up to `tree_size` builds them;
    the hourly rollups recomputed from entries below `tree_size` are put in `recomputed`."""
    if not unit_of:
        return []
    moments: dict[int, datetime] = {}  # a day's 1,440 rollups share 24 hours: convert once

    def moment(seconds: int) -> datetime:
        found = moments.get(seconds)
        if found is None:
            found = moments[seconds] = datetime.fromtimestamp(seconds, UTC)
        return found

    singles, rows = _sums(
        cursor, inputs.community_id, unit_of, tree_size, postgres, markers, stores,
        zone_named(inputs.time_zone),
    )  # fmt: skip
    # An hour of its own is its rollup as stored (a day's 1,440): no arithmetic, no totals.
    cached = moments.get  # most are: no call to `moment`
    built = [
        HourlyRollup(device, sensor, cached(hour) or moment(hour), minutes, mwh, peak,
                     None if peak_at is None else cached(peak_at) or moment(peak_at), 0, 0)
        for device, sensor, hour, minutes, mwh, peak, peak_at in singles
    ]  # fmt: skip
    for device, sensor, unit, minutes, mwh, peak, ranked in rows:
        if peak is None:
            peak_at = None
        elif ranked is not None and ranked // 65536 == peak:
            peak_at = unit + (65535 - ranked % 65536) * 60
        else:  # a peak too large to rank in SQL
            hours = [hour for hour, of in unit_of.items() if of == unit]
            peak_at = cursor.scalar(
                PEAK_MINUTE.format(", ".join("?" * len(hours))),
                (inputs.community_id, device, sensor, peak, tree_size, *hours),
            )
        built.append(
            HourlyRollup(
                device, sensor, moment(unit), int(minutes), None if mwh is None else int(mwh),
                peak, None if peak_at is None else moment(peak_at), 0, 0,
            )
        )  # fmt: skip
    # Rollups touched by an entry the checkpoint does not cover: recomputed from the log.
    # Only the UTC days whose marker reaches the checkpoint can hold one.
    newer = {hour: unit for hour, unit in unit_of.items()
             if markers.get(hour // DAY_SECONDS, -1) >= tree_size}  # fmt: skip
    dirty = [
        row
        for start, end in _spans(newer)
        for row in cursor.execute(
            "SELECT device_id, sensor, hour, first_idx FROM rollups WHERE community_id = ? "
            "AND hour >= ? AND hour < ? AND last_idx >= ?",
            (inputs.community_id, start, end, tree_size),
        ).fetchall()
    ]
    wanted = {(device, sensor, hour) for device, sensor, hour, _ in dirty if hour in unit_of}
    if not wanted:
        return built  # build_report does not depend on their order
    summed = {(r.device_id, r.sensor, int(r.hour.timestamp())): r for r in built}
    devices = sorted({device for device, _, _ in wanted})
    marks = ", ".join("?" * len(devices))
    totals: dict[HourKey, HourTotals] = {}
    for index, device, data, leaf in cursor.execute(
        f"SELECT idx, device_id, entry, leaf_hash FROM entries WHERE idx >= ? AND idx < ? "
        f"AND contract = ? AND device_id IN ({marks}) ORDER BY idx",
        (min(first for *_, first in dirty), tree_size, CONTRACT, *devices),
    ).fetchall():
        if data is None:  # a payload removed under retention: see _payloads_removed
            continue
        try:
            payload = parse_json(bytes(data), what="entry").get("payload")
        except (FormatError, AttributeError):
            continue
        add_entry(totals, index, device, payload, log_tag_id(bytes(leaf)).encode())
    for key in sorted(wanted & totals.keys()):
        recomputed[key] = totals[key]
        device, sensor, hour = key
        unit_key = (device, sensor, unit_of[hour])
        part = hourly_rollup(key, totals[key])
        known = summed.get(unit_key)
        unit_totals = (
            HourTotals(0, None, None, None, part.first_idx, part.last_idx)
            if known is None
            else HourTotals(
                known.minutes, known.energy_mwh, known.peak_mw,
                None if known.peak_minute is None else int(known.peak_minute.timestamp()),
                known.first_idx, known.last_idx,
            )
        )  # fmt: skip
        add(unit_totals, part)
        summed[unit_key] = hourly_rollup(unit_key, unit_totals)
    return list(summed.values())


def _entries_used(
    cursor: DriverCursor, community_id: str, zone: ZoneInfo,
    ranges: list[tuple[datetime, datetime]], tree_size: int, postgres: bool,
    markers: dict[int, int], recomputed: dict[HourKey, HourTotals],
    keeps: list[tuple[str, int, int, str, int, str]],
) -> dict[str, Any] | None:  # fmt: skip
    """The count and digest of the entries used (contracts/energy/provenance.py), from the
    rollups' counts and chains, never the entries: a local day's are read from
    `report_digests` while the day markers they were computed under are unchanged and
    below `tree_size`, else from its rollups below `tree_size` and those `recomputed` from
    the log (appended to `keeps` for `compute` to keep once its UTC days are over)."""
    days = local_days(ranges, zone)
    if not days:
        return entries_digest([])
    cached = {  # the kept days of each range, not of the year between a day and its year before
        (start, end): (stamp, count, digest)
        for first, last in ranges
        for start, end, stamp, count, digest in cursor.execute(
            "SELECT start_hour, end_hour, markers, entries, digest FROM report_digests "
            "WHERE community_id = ? AND start_hour >= ? AND start_hour < ?",
            (community_id, int(first.timestamp()), int(last.timestamp())),
        ).fetchall()
    }
    today = int(datetime.now(UTC).timestamp()) // DAY_SECONDS
    found: dict[int, DayDigest | None] = {}
    stamps: dict[int, str] = {}
    for day, (start, end) in enumerate(days):
        utc_days = list(range(start // DAY_SECONDS, (end - 1) // DAY_SECONDS + 1))
        if (stamp := _stamp(utc_days, markers, tree_size)) is None:
            continue
        known = cached.get((start, end))
        if known is not None and known[0] == stamp:
            found[day] = (int(known[1]), known[2])
            continue
        if utc_days[-1] < today:  # today's markers move with every batch
            stamps[day] = stamp
        # No rollup of the day is newer than the checkpoint: its lines come from SQL.
        found[day] = _day_in_sql(cursor, community_id, start, end, tree_size, postgres)
    lines: dict[int, list[RollupLine]] = {day: [] for day in range(len(days)) if day not in found}
    starts = [start for start, _ in days]
    for start, end in _spans({hour: hour for day in lines
                              for hour in range(days[day][0], days[day][1], 3600)}):  # fmt: skip
        for hour, device, sensor, entries, chain in cursor.execute(
            "SELECT hour, device_id, sensor, entries, chain FROM rollups WHERE community_id = ? "
            "AND hour >= ? AND hour < ? AND last_idx < ?",
            (community_id, start, end, tree_size),
        ).fetchall():
            lines[bisect.bisect_right(starts, hour) - 1].append(
                (hour, device, sensor, entries, None if chain is None else bytes(chain))
            )
    for (device, sensor, hour), totals in recomputed.items():
        day = bisect.bisect_right(starts, hour) - 1
        if day in lines and hour < days[day][1]:
            chain = extend_chain(totals.chain, totals.tags)
            lines[day].append((hour, device, sensor, totals.entries, chain))
    for day, rows in lines.items():
        found[day] = day_digest(rows)
    for day, stamp in stamps.items():
        if (computed := found[day]) is not None:
            keeps.append((community_id, *days[day], stamp, *computed))
    return entries_digest((start, end, found[day]) for day, (start, end) in enumerate(days))


# One local day's rollup lines (contracts/energy/provenance.py `day_digest`) written by the
# database in (hour, device, sensor) code point order: SQLite's BINARY collation compares
# UTF-8 bytes, PostgreSQL's "C" likewise. A NULL line is a rollup with no chain (unknown).
DAY_LINES = (
    "SELECT CASE WHEN chain IS NOT NULL THEN CAST(hour AS TEXT) || ' ' || device_id || ' ' "
    "|| sensor || ' ' || CAST(entries AS TEXT) || ' ' || {hex} || {newline} END, entries "
    "FROM rollups WHERE community_id = ? AND hour >= ? AND hour < ? AND last_idx < ? "
    "ORDER BY hour, device_id{collate}, sensor{collate}"
)
DAY_LINES_IN = {  # by "is it PostgreSQL"
    False: DAY_LINES.format(hex="lower(hex(chain))", newline="char(10)", collate=""),
    True: DAY_LINES.format(hex="encode(chain, 'hex')", newline="chr(10)", collate=' COLLATE "C"'),
}


def _day_in_sql(
    cursor: DriverCursor, community_id: str, start: int, end: int, tree_size: int,
    postgres: bool,
) -> DayDigest | None:  # fmt: skip
    """`day_digest` of a day's rollups below `tree_size`, each line formatted by the
    database: a year's first request formats a million of them (bench/reports.py)."""
    rows = cursor.execute(DAY_LINES_IN[postgres], (community_id, start, end, tree_size)).fetchall()
    if any(line is None for line, _ in rows):
        return None
    text = "".join(line for line, _ in rows)
    return sum(entries for _, entries in rows), hashlib.sha256(text.encode()).hexdigest()


def compute(gateway: Any, community_id: str, period_args: dict[str, Any]) -> dict[str, Any]:
    """The report, read in one snapshot of the database."""
    engine = gateway.log.engine
    options = {"isolation_level": SNAPSHOT[engine.dialect.name]} if (
        engine.dialect.name in SNAPSHOT) else {}  # fmt: skip
    for attempt in range(2):
        stores: list[tuple[str, str, str, str]] = []
        keeps: list[tuple[str, int, int, str, int, str]] = []
        with engine.connect().execution_options(**options) as conn, conn.begin():
            report = _compute_in(conn, community_id, period_args, stores=stores, keeps=keeps)
        if report is not None:
            _keep(engine, [(KEEP_UNITS, stores), (KEEP_DIGESTS, keeps)])
            return report
        if attempt == 0:  # entries were appended without the rollup hook: fold them in
            Rollups(engine, gateway.directory).catch_up()
    raise Problem(503, "Busy", "the rollups are catching up with the log; retry",
                  headers={"Retry-After": "1"})  # fmt: skip


# What a report keeps for the next one, each row with the markers it was computed under.
KEEP_UNITS = (
    "INSERT INTO report_units (community_id, chunk_sha256, markers, sums) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (community_id, chunk_sha256) DO UPDATE SET "
    "markers = excluded.markers, sums = excluded.sums"
)
KEEP_DIGESTS = (
    "INSERT INTO report_digests (community_id, start_hour, end_hour, markers, entries, "
    "digest) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (community_id, start_hour, end_hour) "
    "DO UPDATE SET markers = excluded.markers, entries = excluded.entries, "
    "digest = excluded.digest"
)


def _keep(engine: Engine, writes: list[tuple[str, list[Any]]]) -> None:
    """Keep unit sums and days' digests for the next report, in one write transaction of
    their own: each row carries the markers it was computed under, so one stale by now is
    simply never used."""
    writes = [(sql, rows) for sql, rows in writes if rows]
    if not writes:
        return
    try:
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            cursor = DriverCursor(conn)
            for sql, rows in writes:
                cursor.executemany(sql, rows)
    except OperationalError:  # the writer held the lock too long: the report stands anyway
        pass


def _compute_in(
    conn: Connection, community_id: str, period_args: dict[str, Any], *,
    stores: list[tuple[str, str, str, str]], keeps: list[tuple[str, int, int, str, int, str]],
) -> dict[str, Any] | None:  # fmt: skip
    cursor = DriverCursor(conn)
    if conn.dialect.name == "postgresql":
        # A year's GROUP BY over a million rollups: sorted on disk with the default 4 MB,
        # hashed in memory with this (EXPLAIN ANALYZE 1.5 -> 1.1 s); JIT only adds its 60 ms.
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute("SET LOCAL jit = off")
    row = cursor.execute(
        "SELECT tree_size, root_hash, note FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise Problem(409, "Not sealed yet", "the log has no signed checkpoint yet",
                      headers={"Retry-After": "1"})  # fmt: skip
    tree_size, root_hash, note = int(row[0]), bytes(row[1]), str(row[2])
    through = cursor.scalar("SELECT through_idx FROM rollup_progress WHERE id = 1")
    if through is None or through < tree_size - 1:
        return None
    _rows, registry_entries, registry, communities = _registry(cursor, tree_size)
    if community_id not in communities:
        communities[community_id] = community_inputs(registry, community_id)
    inputs = communities[community_id]
    if inputs is None:
        detail = f"no community {community_id!r} in the log up to checkpoint {tree_size}"
        raise Problem(404, "Not found", detail)
    zone = zone_named(inputs.time_zone)
    if "date" in period_args:
        period = period_of(period_args["kind"], period_args["date"], zone)
    else:
        period = custom_period(period_args["from"], period_args["to"], zone)
    ranges = rollup_ranges(period, inputs.tariff)
    as_of = datetime.now(UTC).replace(second=0, microsecond=0)
    unit_of = units(period, inputs.tariff, as_of)
    postgres = conn.dialect.name == "postgresql"
    recomputed: dict[HourKey, HourTotals] = {}
    markers = _day_markers(cursor, inputs.community_id, ranges)
    rollups = _rollups(
        cursor, inputs, unit_of, tree_size, postgres, markers, stores, recomputed
    )  # fmt: skip
    report = build_report(
        rollups=rollups, roles=inputs.roles, period=period, tariff=inputs.tariff,
        contracted_kw=inputs.contracted_kw, as_of=as_of,
    )  # fmt: skip
    report["provenance"] = {
        "format": PROVENANCE_FORMAT,
        "checkpoint": note,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "entries": _entries_used(
            cursor,
            inputs.community_id,
            zone,
            ranges,
            tree_size,
            postgres,
            markers,
            recomputed,
            keeps,
        ),
        "inputs": inputs.json(),
        "payloads_removed": _payloads_removed(
            cursor, inputs, registry, registry_entries, min(start for start, _ in ranges)
        ),
    }
    return report


def _payloads_removed(
    cursor: DriverCursor, inputs: CommunityInputs, registry: Registry,
    registry_entries: list[RegistryEntry], earliest: datetime,
) -> dict[str, Any] | None:  # fmt: skip
    """What the log no longer holds of this report's inputs (docs/retention.md): those
    minutes count through the hourly rollups kept when their payloads were dropped, so
    `patio report verify` cannot recompute them from the log. None when nothing was."""
    days = cursor.scalar(
        "SELECT payload_days FROM retention_policies WHERE community_id = ?",
        (inputs.community_id,),
    )
    older = days is not None and earliest < datetime.now(UTC) - timedelta(days=int(days))
    erased = sorted(
        {
            payload["subject"].get("id")
            for entry in registry_entries
            if isinstance(payload := entry.payload, dict)
            and payload.get("action") == "erase_device_payloads"
            and isinstance(payload.get("subject"), dict)
            and (device := registry.devices.get(payload["subject"].get("id"))) is not None
            and device.community_id == inputs.community_id
        }
    )
    if not older and not erased:
        return None
    return {
        "retention_days": int(days) if older else None,
        "erased_devices": erased,
        "note": "some payloads of this period were removed; their minutes come from the "
        "hourly rollups kept in the gateway, which patio report verify cannot recompute",
    }


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        if DATE.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise Problem(422, "Invalid request", f"{name} must be a date YYYY-MM-DD, not {value!r}")


@router.get(
    "/reports",
    summary="A community's energy report (JSON, or CSV with Accept: text/csv)",
    description=DESCRIPTION,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def report(
    request: Request,
    gateway: GatewayDep,
    caller: ReaderDep,
    community: Annotated[str, Query(min_length=1, max_length=64)],
    period: Annotated[PeriodKind | None, Query(description="day, week, month or year")] = None,
    on: Annotated[str | None, Query(alias="date", description="a local date in the period")] = None,
    first: Annotated[str | None, Query(alias="from", description="custom range start")] = None,
    last: Annotated[
        str | None, Query(alias="to", description="custom range end (inclusive)")
    ] = None,
) -> Response:
    if not caller.can_read(community):
        raise Problem(403, "Forbidden", f"this key may not read community {community!r}")
    period_args: dict[str, Any]
    if period is not None or on is not None:
        if first is not None or last is not None:
            raise Problem(422, "Invalid request", "give period and date, or from and to, not both")
        if period is None or period is PeriodKind.CUSTOM or on is None:
            raise Problem(422, "Invalid request",
                          "period (day, week, month or year) and date go together")  # fmt: skip
        period_args = {"kind": period, "date": _date(on, "date")}
    elif first is not None and last is not None:
        period_args = {"from": _date(first, "from"), "to": _date(last, "to")}
    else:
        raise Problem(422, "Invalid request", "give period and date, or from and to")
    csv = "text/csv" in request.headers.get("accept", "")
    try:
        content = await asyncio.to_thread(_render, gateway, community, period_args, csv=csv)
    except EnergyError as exc:  # a range too long, a year the tariff cannot price, ...
        raise Problem(422, "Cannot compute this report", str(exc)) from exc
    if csv:
        return Response(content, media_type="text/csv; charset=utf-8")
    return Response(content, media_type="application/json")


def _render(gateway: Any, community_id: str, period_args: dict[str, Any], *, csv: bool) -> bytes:
    """The report's bytes, written in the worker thread that computed it: the event loop
    only sends them, and the report's objects (27,000 for a day) are freed here too."""
    body = compute(gateway, community_id, period_args)
    if csv:
        return render_csv(body).encode()
    # Not canonical (no signature covers it): orjson writes a day's 0.6 MB in a fifth of the
    # standard library's time, the same bytes as json.dumps(separators=(",", ":")).
    return orjson.dumps(body)
