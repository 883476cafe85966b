"""Profile the batch path in one process: what the HTTP process and the writer do per envelope.

Run: .venv/bin/python -m bench.profile_gateway [--backend sqlite|postgresql] [--batches 100]
     [--no-rollups] [--profile] [--top 30]

A real gateway registers the devices and is stopped; then this process runs each batch body
through the same functions the two gateway processes run (the body's parse and validation,
the prechecks (schema, signature), the pickled hand-off to the writer, admission and the commit with
the reading index and the rollups), timing each step with the process's CPU clock. On
PostgreSQL it also reads the CPU time of the server process behind the writer's connection
(proc(5)), which the process's clock does not see: on a shared 2-core machine that CPU is
taken from the same cores. A dev tool: the figures to quote are bench.gateway's, which runs
the real processes under load; this one is steadier under other work's load.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pickle
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import COMMUNITY, gateway, sign_pools, verify_cost
from bench.reports import cpu_seconds
from gateway.config import settle_heap
from gateway.deps import json_body
from gateway.directory import Directory
from gateway.readings import ReadingIndex
from gateway.rollups import Rollups
from gateway.routes.entries import EntriesRequest
from gateway.submissions import Submissions, envelope_contract
from gateway.writer import _decide_fresh, _frame, within_all
from ledger.keys import NamedKey
from ledger.log import Log, Within
from ledger.storage import open_engine


def main() -> None:
    """Register devices through a real gateway, then time the steps in this process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--readings", type=int, default=8)
    parser.add_argument("--no-rollups", action="store_true", help="the commit without rollups")
    parser.add_argument("--profile", action="store_true", help="cProfile, by own time")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    keys = [NamedKey.generate(f"bench-{n:03d}") for n in range(args.devices)]
    [pool] = sign_pools(keys, [args.batches * 100], args.readings)
    bodies = [
        ('{"contract":"energy_minute","envelopes":[' + ",".join(pool[i : i + 100]) + "]}").encode()
        for i in range(0, len(pool), 100)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="patio-profile-") as tmp,
        gateway(args.backend, Path(tmp), rollups=True) as (server, _),
    ):
        server.community(COMMUNITY)
        for key in keys:
            body = {"id": key.name, "community_id": COMMUNITY, "public_key": key.public_key_b64}
            server.admin.post("/v1/devices", json=body).raise_for_status()
        sqlite = f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}"
        url = server.env.get("PATIO_DATABASE_URL") or sqlite
        server.stop()
        run(url, bodies, args)
        unit = sorted(verify_cost(pool[0]))[2]
        print(f"  one Ed25519 verification here: {unit * 1e6:.1f} us (bench.gateway's unit)")


def run(url: str, bodies: list[bytes], args: argparse.Namespace) -> None:
    """Each body through both processes' steps; CPU time per envelope for each step."""
    engine = open_engine(url, migrate=False, autocheckpoint=False, ping=False)
    signer = NamedKey.generate("_registry")
    directory = Directory(engine, registry_key=signer.public_key_b64)
    log = Log(engine=engine, signer=None, origin="writer")
    hooks: dict[str, Within] = {"readings": ReadingIndex(engine, directory).write}
    if not args.no_rollups:
        hooks["rollups"] = Rollups(engine, directory).write
    backends: set[int] = set()  # PostgreSQL server processes the commits ran on

    def backend(conn: Any, *_: Any) -> None:
        if engine.dialect.name == "postgresql":
            backends.add(conn.connection.dbapi_connection.info.backend_pid)

    hook_spent = dict.fromkeys(hooks, 0.0)

    def timed(name: str, hook: Within) -> Within:
        def run(*args: Any) -> None:
            started = time.process_time()
            hook(*args)
            hook_spent[name] += time.process_time() - started

        return run

    within = within_all(backend, *(timed(name, hook) for name, hook in hooks.items()))
    server_cpu = 0.0
    if engine.dialect.name == "postgresql":  # the pooled connection the commits will use
        with engine.connect() as conn:
            pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        server_cpu = -cpu_seconds(pid)
    submissions = Submissions(writer=None, directory=directory)  # type: ignore[arg-type]
    checker = envelope_contract("energy_minute")
    steps = dict.fromkeys(["parse+validate", "precheck", "pickle", "decide+commit"], 0.0)
    profiler = cProfile.Profile() if args.profile else None
    settle_heap()  # as both gateway processes do once started
    clock = time.process_time
    envelopes = 0
    for body in bodies:
        if profiler:
            profiler.enable()
        t0 = clock()
        request = json_body(EntriesRequest, "application/json", body)
        t1 = clock()
        admit = submissions._admit(checker, request.envelopes, time.time(), None)
        t2 = clock()
        [(_, arrived)] = [pickle.loads(_frame((0, admit))[4:])]
        t3 = clock()
        _decide_fresh([arrived], log, directory, within)
        t4 = clock()
        if profiler:
            profiler.disable()
        envelopes += len(request.envelopes)
        for name, spent in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            steps[name] += spent
    total = sum(steps.values())
    print(f"{envelopes:,} envelopes on {engine.dialect.name}, CPU per envelope (this process):")
    for name, spent in steps.items():
        print(f"  {name:16} {spent / envelopes * 1e6:7.1f} us")
    for name, hook_time in hook_spent.items():
        print(f"    of which {name:9} {hook_time / envelopes * 1e6:7.1f} us")
    print(f"  {'total':16} {total / envelopes * 1e6:7.1f} us")
    if engine.dialect.name == "postgresql":
        server_cpu += cpu_seconds(pid)
        note = "" if backends == {pid} else f" (MORE THAN ONE: {sorted(backends)})"
        print(f"  PostgreSQL server process {pid}{note}: {server_cpu / envelopes * 1e6:7.1f} us")
    print(f"  load average {os.getloadavg()[0]:.1f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    engine.dispose()


if __name__ == "__main__":
    main()
