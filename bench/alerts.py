"""Alert evaluator benchmark: its CPU per entry in one process, the four rule kinds over
every device of a community (docs/alerts.md, Cost at ingest).

Run: .venv/bin/python -m bench.alerts [--devices 100] [--minutes 100] [--per-pass 10000]
       [--database-url URL] [--profile]
`--database-url`: a PostgreSQL database, run in a fresh schema dropped afterwards (so a
database the bench ran on before takes it again); default a new SQLite file.
Appends `--minutes` minutes of the gateway bench's payload (8 readings) for each device, and
after each `--per-pass` entries (what arrives between two passes: the batch rate of
bench.gateway, about 2,000 envelopes a second, over the 5 s between two passes while a
backlog streams in, PATIO_ALERT_BACKLOG_INTERVAL) runs Evaluator.evaluate, timing only that;
prints the CPU and wall time per entry. `--profile`: a cProfile's top.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from bench.gateway import BENCH_RULES
from bench.ledger import signed
from bench.retention import COMMUNITY, register
from gateway.alerts.channels import Sender
from gateway.alerts.evaluator import Evaluator
from gateway.alerts.rules import RuleSpec
from gateway.alerts.tables import alert_rules
from gateway.store import upgrade
from ledger.keys import NamedKey
from ledger.log import Log


def setup(log: Log, device_count: int) -> list[NamedKey]:
    """The community, its devices and the bench's rules."""
    with log.engine.connect().execution_options(patio_write=True) as conn, conn.begin():
        keys = register(conn, device_count)
        for rule in BENCH_RULES:
            spec = RuleSpec.model_validate(rule)
            conn.execute(
                alert_rules.insert().values(
                    community_id=COMMUNITY,
                    name=spec.name,
                    spec=spec.model_dump_json(by_alias=True),
                    created_at=int(time.time()),
                )
            )
    return keys


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new schema in the PostgreSQL database at `url`, dropped afterwards; yields the URL
    that works in it (any search_path `url` set is replaced)."""
    name = f"bench_alerts_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    try:
        inside = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        yield inside.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


@dataclass(frozen=True)
class Figures:
    """What a run measured: the evaluator's time over the entries it read."""

    read: int
    passes: int
    wall: float
    cpu: float


def run(
    url: str, *, devices: int, minutes: int, per_pass: int, profile: cProfile.Profile | None
) -> Figures:
    """Append `minutes` minutes for `devices` devices into the empty database at `url`,
    evaluating after each `per_pass` entries; only the passes timed."""
    log = Log.open(url=url, signer=NamedKey.generate("bench.example/log"))
    try:
        upgrade(log.engine)
        evaluator = Evaluator(
            log.engine, sender=Sender(smtp_url=None), recorder=lambda _: "", clock=lambda: 0
        )
        evaluator.evaluate()  # the first start, before any reading
        keys = setup(log, devices)
        pending = [sub for seq in range(minutes) for key in keys for sub in signed(key, 1, seq)]
        wall = cpu = 0.0
        read = passes = 0
        for first in range(0, len(pending), per_pass):
            log.append(pending[first : first + per_pass])
            started, cpu_started = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            while True:  # as the gateway's task: a pass, more only while a batch is full
                step = evaluator.evaluate()
                read, passes = read + step, passes + 1
                if step < evaluator.batch:
                    break
            if profile is not None:
                profile.disable()
            wall += time.perf_counter() - started
            cpu += time.process_time() - cpu_started
        return Figures(read=read, passes=passes, wall=wall, cpu=cpu)
    finally:
        log.engine.dispose()


def main() -> None:
    """Build, evaluate, measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=100)
    parser.add_argument("--per-pass", type=int, default=10_000, help="entries between passes")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument("--sort", default="cumulative", help="the profile's order (tottime...)")
    args = parser.parse_args()
    if args.database_url and make_url(args.database_url).get_backend_name() != "postgresql":
        parser.error("--database-url takes a PostgreSQL URL")
    profile = cProfile.Profile(time.process_time) if args.profile else None
    sizes = {"devices": args.devices, "minutes": args.minutes, "per_pass": args.per_pass}
    if args.database_url:
        with fresh_schema(args.database_url) as url:
            figures = run(url, **sizes, profile=profile)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}"
            figures = run(url, **sizes, profile=profile)
    read = figures.read
    print(
        f"alert evaluator, {len(BENCH_RULES)} rules over {args.devices} devices, "
        f"{'postgresql' if args.database_url else 'sqlite'}: {read:,} entries in "
        f"{figures.passes} passes, {figures.wall:.2f} s; {figures.cpu / read * 1e6:.1f} us CPU "
        f"and {figures.wall / read * 1e6:.1f} us wall per entry (this process; the database "
        f"server's CPU not counted)"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(25)


if __name__ == "__main__":
    main()
