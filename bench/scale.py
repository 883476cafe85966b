"""Scale figures on PostgreSQL: batched envelopes/s with 1, 2 and 4 gateway processes on one
database, and proof latency at 10 million entries.

Run: .venv/bin/python -m bench.scale [--gateways 1,2,4] [--duration 8] [--entries 10000000]
     [--proofs 2000] [--skip-throughput] [--skip-proofs]

Throughput: N `patio gateway serve` processes (each with its writer) on a fresh schema, one
`wrk` per gateway posting batches of 100 envelopes signed before the clock starts (the
harness of bench/gateway.py); accepted envelopes come from each gateway's own metrics.
Proofs: the Merkle chunks of a 10-million-leaf log are built directly with bulk SQL (COPY;
appending ten million entries through the gateway would take hours here), with two signed
checkpoints; inclusion and consistency proofs are then timed through `ledger.log.Log`, the
code behind GET /v1/proofs/*, on a fresh connection pool. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.gateway import (
    COMMUNITY,
    POSTGRES_URL,
    cpu_note,
    postgres_reachable,
    quantile,
    run_wrk,
    sign_pools,
    write_lines,
)
from ledger import merkle
from ledger.keys import NamedKey
from ledger.storage import CHUNK_SIZE
from tests.gateway.server import Gateway, start_gateway


@contextmanager
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    name = f"scale_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


def throughput(count: int, pool: list[str], keys: list[NamedKey], args: argparse.Namespace,
               work: Path) -> float:  # fmt: skip
    """Accepted envelopes/s with `count` gateways, each loaded by a wrk of its own."""
    env = {"PATIO_SEAL_INTERVAL": "5"}  # the server's default
    with schema() as url, ExitStack() as stack:
        servers: list[Gateway] = []
        for _ in range(count):
            data_dir = work / f"n{count}"
            data_dir.mkdir(exist_ok=True)
            server = start_gateway(data_dir, database_url=url, extra_env=env)
            stack.callback(server.stop)
            servers.append(server)
        servers[0].community(COMMUNITY)
        for key in keys:
            body = {"id": key.name, "community_id": COMMUNITY, "public_key": key.public_key_b64}
            servers[0].admin.post("/v1/devices", json=body).raise_for_status()
        share = len(pool) // count // args.batch * args.batch
        files = []
        for n in range(count):
            mine = pool[n * share : (n + 1) * share]
            bodies = [
                '{"contract":"energy_minute","envelopes":['
                + ",".join(mine[i : i + args.batch])
                + "]}"
                for i in range(0, len(mine), args.batch)
            ]
            files.append((write_lines(work / f"n{count}-{n}.txt", bodies), len(bodies)))
        results: list[dict[str, float]] = [{} for _ in servers]

        def load(n: int) -> None:
            results[n] = run_wrk(
                servers[n], files[n][0], connections=args.connections, duration=args.duration
            )

        threads = [threading.Thread(target=load, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = max(r["duration_us"] for r in results) / 1e6
        accepted = sum(int(r["accepted"]) for r in results)
        cpu = sum(r["cpu"] for r in results)
        exhausted = any(r["requests"] > files[n][1] for n, r in enumerate(results))
        rate = accepted / seconds
        print(
            f"{count} gateway process(es): {rate:,.0f} envelopes/s accepted "
            f"(batches of {args.batch}, {count} wrk x {args.connections} connections, "
            f"{seconds:.1f} s, p99 {max(r['p99_us'] for r in results) / 1000:.0f} ms"
            f"{', POOL EXHAUSTED' if exhausted else ''}); "
            + cpu_note(cpu, seconds, accepted, "envelope")
        )
        return rate


def build_levels(size: int) -> list[bytes]:
    """Every level of complete-subtree hashes over `size` synthetic leaves, concatenated."""
    sha = hashlib.sha256
    leaf, node = merkle.LEAF_PREFIX, merkle.NODE_PREFIX
    levels = [b"".join(sha(leaf + i.to_bytes(8, "big")).digest() for i in range(size))]
    while len(levels[-1]) >= 64:
        below = memoryview(levels[-1])
        pairs = len(below) // 64
        levels.append(
            b"".join(sha(node + below[64 * i : 64 * i + 64]).digest() for i in range(pairs))
        )
    return levels


def fetcher(levels: list[bytes]) -> merkle.NodeFetcher:
    """Node hashes from the in-memory levels."""

    def fetch(ids: object) -> dict[merkle.NodeId, bytes]:
        return {(lv, i): levels[lv][32 * i : 32 * i + 32] for lv, i in ids}  # type: ignore[attr-defined]

    return fetch


def proofs(args: argparse.Namespace) -> None:
    """Inclusion and consistency proof latency at `args.entries` leaves."""
    import psycopg

    from ledger.log import Log
    from ledger.note import Checkpoint
    from ledger.storage import open_engine

    size, half = args.entries, args.entries // 2 + 3
    started = time.perf_counter()
    levels = build_levels(size)
    built = time.perf_counter() - started
    signer = NamedKey.generate("bench-scale")
    with schema() as url:
        engine = open_engine(url)  # migrates the fresh schema
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        started = time.perf_counter()
        rows = 0
        with psycopg.connect(conninfo) as conn:
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY merkle_chunks (level, chunk, hashes) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["int4", "int8", "bytea"])
                step = CHUNK_SIZE * merkle.HASH_SIZE
                for level, data in enumerate(levels):
                    for chunk, offset in enumerate(range(0, len(data), step)):
                        copy.write_row((level, chunk, data[offset : offset + step]))
                        rows += 1
            for tree_size in (half, size):
                root = merkle.tree_root(tree_size, fetcher(levels))
                note = Checkpoint(origin=signer.name, tree_size=tree_size, root_hash=root).sign(
                    signer
                )
                conn.execute(
                    "INSERT INTO checkpoints (tree_size, root_hash, note, created_at) "
                    "VALUES (%s, %s, %s, %s)",
                    (tree_size, root, note, "2026-11-30T00:00:00Z"),
                )
            conn.execute("ANALYZE merkle_chunks")
        stored = time.perf_counter() - started
        print(
            f"built {size:,} leaves' Merkle levels in {built:.0f} s (Python hashlib) and stored "
            f"{rows:,} merkle_chunks rows with COPY in {stored:.0f} s; no entry rows (proofs "
            "read only chunks and checkpoints)"
        )
        engine.dispose()
        log = Log(engine=open_engine(url, migrate=False), signer=signer, origin=signer.name)
        root = merkle.tree_root(size, fetcher(levels))
        rng = random.Random(9162)
        timings = []
        for n in range(args.proofs):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            path = log.inclusion_proof(index, size)
            timings.append(time.perf_counter() - t0)
            if n % 100 == 0:  # the proofs are right, not only fast
                merkle.verify_inclusion(
                    levels[0][32 * index : 32 * index + 32], index, size, path, root
                )
        timings.sort()
        print(
            f"inclusion proof at {size:,} entries: p50 {quantile(timings, 0.5) * 1000:.2f} ms, "
            f"p99 {quantile(timings, 0.99) * 1000:.2f} ms over {args.proofs:,} random indexes "
            f"({len(path)} hashes each; Log.inclusion_proof, one pooled connection)"
        )
        old_root = merkle.tree_root(half, fetcher(levels))
        timings = []
        for _ in range(max(args.proofs // 4, 1)):
            t0 = time.perf_counter()
            path = log.consistency_proof(half, size)
            timings.append(time.perf_counter() - t0)
        merkle.verify_consistency(half, size, path, old_root, root)
        timings.sort()
        print(
            f"consistency proof {half:,} -> {size:,}: p50 {quantile(timings, 0.5) * 1000:.2f} ms, "
            f"p99 {quantile(timings, 0.99) * 1000:.2f} ms ({len(path)} hashes)"
        )
        log.engine.dispose()


def serial_section(args: argparse.Namespace) -> None:
    """How long one append holds the append lock: the ceiling of any number of gateways."""
    from ledger.log import Log, Submission

    signer = NamedKey.generate("bench-serial")
    with schema() as url:
        log = Log.open(url=url, signer=signer)
        held = []
        for n in range(args.serial_batches):
            batch = [
                Submission(
                    contract="energy_minute@1",
                    payload={"device_id": f"d{i % 100}", "seq": n * args.serial_batch + i, "n": i},
                    sig="s" * 86,
                    device_id=f"d{i % 100}",
                    seq=n * args.serial_batch + i,
                )
                for i in range(args.serial_batch)
            ]
            t0 = time.perf_counter()
            log.append(batch)
            held.append(time.perf_counter() - t0)
        log.engine.dispose()
    held.sort()
    p50 = quantile(held, 0.5)
    print(
        f"one commit of {args.serial_batch} entries (Log.append alone, which holds the append "
        f"lock for most of its time; the writer adds the reading index, rollups and registry "
        f"checks): p50 {p50 * 1000:.1f} ms, p99 {quantile(held, 0.99) * 1000:.1f} ms over "
        f"{args.serial_batches} commits: about {args.serial_batch / p50:,.0f} entries/s for one "
        "database, however many gateways"
    )


def main() -> None:
    """Parse arguments and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", default="1,2,4", help="gateway process counts")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections per gateway")
    parser.add_argument("--batch", type=int, default=100, help="envelopes per request")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--readings", type=int, default=8, help="sensor readings per minute")
    parser.add_argument("--pool", type=int, default=160_000, help="envelopes signed per run")
    parser.add_argument("--entries", type=int, default=10_000_000, help="leaves for the proofs")
    parser.add_argument("--proofs", type=int, default=2000, help="inclusion proofs timed")
    parser.add_argument("--serial-batch", type=int, default=1000, help="entries per commit")
    parser.add_argument("--serial-batches", type=int, default=50, help="commits timed alone")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-proofs", action="store_true")
    args = parser.parse_args()
    if not postgres_reachable():
        sys.exit("PostgreSQL is not reachable on 127.0.0.1:5432")
    print(
        f"machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}; gateways, PostgreSQL and wrk share these cores; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    if not args.skip_throughput:
        if shutil.which("wrk") is None:
            sys.exit("wrk is not installed (apt-get install -y wrk)")
        keys = [NamedKey.generate(f"scale-{n:03d}") for n in range(args.devices)]
        # One pool, re-used: each run has a fresh schema, so every envelope is new there.
        [pool] = sign_pools(keys, [args.pool], args.readings)
        with tempfile.TemporaryDirectory(prefix="patio-scale-") as tmp:
            for count in (int(n) for n in args.gateways.split(",")):
                throughput(count, pool, keys, args, Path(tmp))
    serial_section(args)
    if not args.skip_proofs:
        proofs(args)


if __name__ == "__main__":
    main()
