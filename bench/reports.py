"""Report benchmark: a year and a day of a 50-device community, on SQLite and PostgreSQL.

Run: .venv/bin/python -m bench.reports [--backend sqlite|postgresql|all] [--runs 5]

How the data is built (signing and ingesting 26 million minutes is not feasible here):
- 50 devices (20 PV inverters with a W gauge, 10 grid meters with import and export Wh
  counters, 20 plugs with a W gauge: 60 energy sensors) are registered through the admin API
  with declared profiles, in a Europe/Madrid community with the Spain 2.0TD tariff.
- A deterministic generator gives each device-sensor-minute a value that is constant within
  an hour (a daily solar curve, consumption patterns) and drops the first 5 minutes of some
  hours (missing minutes). Its hourly rollups, from 2025-01-01 to the current hour except a
  6-hour sample, are written with one bulk `INSERT ... SELECT` per sensor over a generated
  series of hours (PostgreSQL generate_series, SQLite a recursive CTE): that many minutes
  (printed; ~26 million a year) is what they stand for, with no log entries behind them.
- The 6-hour sample (2026-11-29 10:00-16:00 UTC) is ingested for real: every device's signed
  minutes from the same generator through POST /v1/entries, rolled up by the gateway in the
  append's transaction; the bench checks those rollups' sums and entry counts equal the
  generator's rows for the same hours (computed into a temporary table by the same SQL).
  The bulk rows get the day markers the gateway writes with every rollup (`rollup_days`,
  docs/rollups.md) and stand-in chains (no log tag ids behind them).
Then the log is sealed and `GET /v1/reports` is timed over HTTP (the real server: snapshot,
registry replay, SQL aggregation, build_report, JSON): the year 2026 (compared with 2025)
and the day 2026-11-29, median and best of `--runs`, with the gateway process's CPU time
per request (on a shared machine the steadier figure; PostgreSQL's own is not in it) and
the load average. The first request of each is timed apart: the year's keeps its closed
months' unit sums (`report_units`) for the requests after it. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, text

from bench.gateway import gateway as running_gateway
from bench.gateway import postgres_reachable
from ledger.keys import NamedKey
from ledger.storage import database_url, open_engine

COMMUNITY = "bench-hoa"
FIRST = datetime(2025, 1, 1, tzinfo=UTC)
SAMPLE = (datetime(2026, 11, 29, 10, tzinfo=UTC), datetime(2026, 11, 29, 16, tzinfo=UTC))
TARIFF = Path(__file__).parent.parent / "contracts" / "energy" / "tariffs" / "es-2.0td.json"
# (device index, device id, sensor, role, unit); the index enters the generator.
SENSORS = (
    [(i, f"pv-{i:02d}", "pv_w", "generation", "W") for i in range(20)]
    + [(i, f"meter-{i:02d}", "import_wh", "grid_import", "Wh") for i in range(20, 30)]
    + [(i, f"meter-{i:02d}", "export_wh", "grid_export", "Wh") for i in range(20, 30)]
    + [(i, f"plug-{i:02d}", "load_w", "consumption", "W") for i in range(30, 50)]
)
# k: the sensor's per-minute value in units of 1 Wh (= 60 W) during hour number H (Unix
# seconds / 3600) of device index I; HD is the hour of the day (UTC + 1).
K = {
    "pv_w": "CASE WHEN abs({hd} - 13) < 6 THEN (6 - abs({hd} - 13)) * (1 + {i} % 3) * 10 "
    "ELSE 0 END",
    "import_wh": "1 + ({h} * 7 + {i}) % 11",
    "export_wh": "CASE WHEN abs({hd} - 13) < 3 THEN ({h} + {i}) % 4 ELSE 0 END",
    "load_w": "2 + ({h} * 3 + {i}) % 9",
}
MISSING = "CASE WHEN ({h} + {i} * 5) % 17 = 0 THEN 5 ELSE 0 END"  # the hour's first minutes


def k_value(sensor: str, hour: int, index: int) -> int:
    """The generator in Python (for the ingested sample); the same as K and MISSING."""
    hd = (hour + 1) % 24
    if sensor == "pv_w":
        return (6 - abs(hd - 13)) * (1 + index % 3) * 10 if abs(hd - 13) < 6 else 0
    if sensor == "import_wh":
        return 1 + (hour * 7 + index) % 11
    if sensor == "export_wh":
        return (hour + index) % 4 if abs(hd - 13) < 3 else 0
    return 2 + (hour * 3 + index) % 9


def missing(hour: int, index: int) -> int:
    return 5 if (hour + index * 5) % 17 == 0 else 0


def generate(
    conn: Connection,
    table: str,
    start: datetime,
    end: datetime,
    skip: tuple[datetime, datetime] | None,
) -> None:
    """Insert the generator's hourly rollups for [start, end) into `table`, in one bulk
    INSERT ... SELECT, hour by hour as ingestion writes them (the rows' physical order)."""
    postgres = conn.dialect.name == "postgresql"
    series = (
        "SELECT g AS s FROM generate_series(CAST(:a AS BIGINT), CAST(:b AS BIGINT) - 1, 3600) g"
        if postgres
        else "WITH RECURSIVE t(s) AS (SELECT :a UNION ALL SELECT s + 3600 FROM t WHERE "
        "s + 3600 < :b) SELECT s FROM t"
    )
    sensors = " UNION ALL ".join(
        f"SELECT {index} AS i, '{device}' AS device_id, '{sensor}' AS sensor"
        for index, device, sensor, _, _ in SENSORS
    )
    terms = {"hd": "((s / 3600 + 1) % 24)", "h": "(s / 3600)", "i": "v.i"}
    k = (
        "CASE v.sensor "
        + " ".join(
            f"WHEN '{sensor}' THEN {template.format(**terms)}" for sensor, template in K.items()
        )
        + " END"
    )
    m = MISSING.format(**terms)
    lo, hi = (int(skip[0].timestamp()), int(skip[1].timestamp())) if skip else (0, 0)
    # A stand-in chain per row (no entries behind it); a meter's entries count at export_wh,
    # its first sensor in code point order, as the gateway counts them.
    chain = (
        "sha256(int8send(s) || convert_to(v.device_id || v.sensor, 'UTF8'))"
        if postgres
        else "randomblob(32)"
    )
    conn.execute(
        text(
            f"INSERT INTO {table} (device_id, hour, sensor, community_id, minutes, "
            "energy_mwh, peak_mw, peak_minute, first_idx, last_idx, entries, chain) "
            f"SELECT v.device_id, s, v.sensor, :community, 60 - ({m}), "
            f"(60 - ({m})) * 1000 * ({k}), 60000 * ({k}), s + 60 * ({m}), 0, 0, "
            f"CASE v.sensor WHEN 'import_wh' THEN 0 ELSE 60 - ({m}) END, {chain} "
            f"FROM ({series}) hours CROSS JOIN ({sensors}) v "
            "WHERE NOT (s >= :lo AND s < :hi) ORDER BY s, v.device_id, v.sensor"
        ),
        {
            "community": COMMUNITY,
            "lo": lo,
            "hi": hi,
            "a": int(start.timestamp()),
            "b": int(end.timestamp()),
        },
    )


def sample_envelopes(keys: dict[str, NamedKey]) -> list[dict[str, Any]]:
    """Every device's signed minutes of the sample hours, from the generator."""
    out = []
    devices = sorted({(i, device) for i, device, *_ in SENSORS})
    for index, device in devices:
        sensors = [(s, u) for i, d, s, _, u in SENSORS if d == device]
        seq = 0
        minute = SAMPLE[0]
        while minute < SAMPLE[1]:
            hour = int(minute.timestamp()) // 3600
            seq += 1
            if minute.minute >= missing(hour, index):
                readings: dict[str, Any] = {}
                for sensor, unit in sensors:
                    k = k_value(sensor, hour, index)
                    if unit == "Wh":
                        readings[sensor] = {"unit": "Wh", "sum": k, "n": 12, "missing": 0}
                    else:
                        readings[sensor] = {
                            "unit": "W",
                            "n": 12,
                            "missing": 0,
                            "avg": 60 * k,
                            "min": 60 * k,
                            "max": 60 * k,
                        }
                payload = {
                    "device_id": device,
                    "seq": seq,
                    "start": minute.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "period_s": 60,
                    "readings": readings,
                }
                out.append({"payload": payload, "sig": keys[device].sign_payload(payload)})
            minute += timedelta(minutes=1)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time the threads of process `pid` have used so far, in nanoseconds' resolution:
    the sum of each thread's time on a CPU (proc(5): /proc/PID/task/TID/schedstat, first
    field). /proc/PID/stat counts in clock ticks (10 ms here), too coarse for one request:
    a first request once read 60 ms against 87 for the repeats. The threads that serve a
    report (the event loop and its worker threads) live as long as the gateway does."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def timed(
    client: httpx.Client, params: dict[str, str], runs: int, pid: int
) -> tuple[float, float, float, int, float, float]:
    """(median, best) seconds of GET /v1/reports, the gateway's CPU seconds per request
    (not PostgreSQL's), the body's size, and the first request's seconds and CPU seconds
    (no unit sums cached yet in `report_units`)."""
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    client.get("/v1/reports", params=params).raise_for_status()  # fills report_units
    first, first_cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    times = []
    size = 0
    cpu = cpu_seconds(pid)
    for _ in range(runs):
        started = time.perf_counter()
        reply = client.get("/v1/reports", params=params)
        times.append(time.perf_counter() - started)
        reply.raise_for_status()
        size = len(reply.content)
    cpu_each = (cpu_seconds(pid) - cpu) / runs
    return statistics.median(times), min(times), cpu_each, size, first, first_cpu


def profile_report(server: Any, params: dict[str, Any]) -> None:
    """cProfile of the report computed in this process (--profile), top 25 by own time."""
    import cProfile
    import pstats
    from types import SimpleNamespace

    from gateway.routes.reports import compute

    engine = open_engine(
        database_url(server.env.get("PATIO_DATABASE_URL"), server.data_dir), migrate=False
    )
    fake = SimpleNamespace(log=SimpleNamespace(engine=engine), directory=None)
    compute(fake, COMMUNITY, params)
    profiler = cProfile.Profile()
    profiler.enable()
    compute(fake, COMMUNITY, params)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    engine.dispose()


def bench(backend: str, runs: int, with_profile: bool = False) -> list[str]:
    lines = [f"== {backend}"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_gateway(backend, Path(tmp), rollups=True) as (server, _durability),
    ):
        admin = server.admin
        admin.post(
            "/v1/communities",
            json={"id": COMMUNITY, "name": "Bench HOA", "time_zone": "Europe/Madrid"},
        ).raise_for_status()
        keys: dict[str, NamedKey] = {}
        for device in sorted({d for _, d, *_ in SENSORS}):
            keys[device] = NamedKey.generate(device)
            profile = {
                "sensors": {s: {"role": r, "unit": u} for _, d, s, r, u in SENSORS if d == device}
            }
            admin.post(
                "/v1/devices",
                json={
                    "id": device,
                    "community_id": COMMUNITY,
                    "public_key": keys[device].public_key_b64,
                    "profile": profile,
                },
            ).raise_for_status()
        admin.put(
            f"/v1/communities/{COMMUNITY}/tariff",
            json={
                "tariff": json.loads(TARIFF.read_text()),
                "contracted_kW": {"P1": "30", "P2": "30"},
            },
        ).raise_for_status()

        started = time.perf_counter()
        envelopes = sample_envelopes(keys)
        signed = time.perf_counter() - started
        started = time.perf_counter()
        with server.client() as client:
            for i in range(0, len(envelopes), 100):
                reply = client.post(
                    "/v1/entries",
                    json={"contract": "energy_minute", "envelopes": envelopes[i : i + 100]},
                )
                reply.raise_for_status()
        ingested = time.perf_counter() - started
        lines.append(
            f"sample: {len(envelopes)} signed minutes ingested over HTTP in "
            f"{ingested:.1f} s (signing {signed:.1f} s)"
        )

        engine = open_engine(
            database_url(server.env.get("PATIO_DATABASE_URL"), server.data_dir), migrate=False
        )
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        started = time.perf_counter()
        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            generate(conn, "rollups", FIRST, end, SAMPLE)
            # The day markers the gateway keeps with every rollup it writes (g0011), for
            # the rows written behind its back: the highest log index of each UTC day's rows.
            conn.execute(text("DELETE FROM rollup_days"))
            conn.execute(
                text(
                    "INSERT INTO rollup_days (community_id, day, changed_idx) SELECT "
                    "community_id, hour / 86400, max(last_idx) FROM rollups "
                    "GROUP BY community_id, hour / 86400"
                )
            )
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ANALYZE rollups"))
                conn.commit()
            rows, minutes = conn.execute(text("SELECT count(*), sum(minutes) FROM rollups")).one()
            year_minutes = conn.execute(
                text(
                    "SELECT sum(m) FROM (SELECT max(minutes) AS m FROM rollups WHERE hour >= :a "
                    "AND hour < :b GROUP BY device_id, hour) per_device_hour"
                ),
                {
                    "a": int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()),
                    "b": int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()),
                },
            ).scalar_one()
        built = time.perf_counter() - started
        lines.append(
            f"rollups: {rows} rows ({minutes} sensor-minutes) from {FIRST:%Y-%m-%d} to "
            f"{end:%Y-%m-%d %H}:00, bulk SQL in {built:.1f} s; 2025 alone stands for "
            f"{year_minutes} device-minutes (log entries)"
        )

        with engine.connect().execution_options(patio_write=True) as conn, conn.begin():
            table = "bench_expected"
            conn.execute(
                text(
                    f"CREATE TEMP TABLE {table} (device_id VARCHAR(64), hour BIGINT, "
                    "sensor VARCHAR(64), community_id VARCHAR(64), minutes INT, "
                    "energy_mwh BIGINT, peak_mw BIGINT, peak_minute BIGINT, "
                    "first_idx BIGINT, last_idx BIGINT, entries INT, chain BYTEA)"
                )
            )
            generate(conn, table, SAMPLE[0], SAMPLE[1], None)
            expected = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            equal = conn.execute(
                text(
                    f"SELECT count(*) FROM {table} e JOIN rollups r ON r.device_id = e.device_id "
                    "AND r.sensor = e.sensor AND r.hour = e.hour WHERE r.minutes = e.minutes AND "
                    "r.energy_mwh = e.energy_mwh AND r.peak_mw = e.peak_mw AND "
                    "r.peak_minute = e.peak_minute AND r.entries = e.entries"
                )
            ).scalar_one()
        verdict = "match" if equal == expected else "DO NOT match"
        lines.append(
            f"sample rollups built by the gateway {verdict} the generator's: "
            f"{equal} of {expected} rows equal"
        )
        engine.dispose()
        server.seal()

        with server.client(server.admin_token) as client:
            client.timeout = 120
            for label, params, target in (
                ("year 2026 (vs 2025)", {"period": "year", "date": "2026-06-01"}, 1.0),
                ("day 2026-11-29", {"period": "day", "date": "2026-11-29"}, 0.05),
            ):
                median, best, cpu, size, first, first_cpu = timed(
                    client, {"community": COMMUNITY, **params}, runs, server.process.pid
                )
                lines.append(
                    f"{label}: median {median * 1000:.0f} ms, best {best * 1000:.0f} ms "
                    f"(target {target * 1000:.0f} ms: {median / target:.2f}x of it), "
                    f"gateway CPU {cpu * 1000:.0f} ms a request, {size} bytes of JSON; "
                    f"first request (nothing cached) {first * 1000:.0f} ms, CPU "
                    f"{first_cpu * 1000:.0f} ms; load average {os.getloadavg()[0]:.1f}"
                )
        if with_profile:
            from contracts.energy.periods import PeriodKind

            profile_report(server, {"kind": PeriodKind.YEAR, "date": datetime(2026, 6, 1).date()})
            profile_report(server, {"kind": PeriodKind.DAY, "date": datetime(2026, 11, 29).date()})
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for backend in backends:
        if backend == "postgresql" and not postgres_reachable():
            print("== postgresql: not reachable, skipped")
            continue
        for line in bench(backend, args.runs, args.profile):
            print(line, flush=True)


if __name__ == "__main__":
    main()
