"""Ledger benchmarks: durable append, seal, inclusion-proof latency, bundle verification.

Run: .venv/bin/python -m bench.ledger [--proof-entries 1000000] [--database-url URL]
Prints one line per figure; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ledger.encoding import canonical_json, rfc3339_utc
from ledger.keys import NamedKey
from ledger.log import Log, Submission
from ledger.verify import verify_bundle

CONTRACT = "energy_minute@1"
FIRST_MINUTE = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def minute(device: str, seq: int) -> dict[str, object]:
    """A realistic energy_minute payload (8 readings)."""
    readings: dict[str, object] = {
        f"t{i}": {
            "unit": "Cel",
            "n": 60,
            "missing": 0,
            "avg": 20 + i + seq % 7 / 10,
            "min": 19.5 + i,
            "max": 21.25 + i,
        }
        for i in range(6)
    }
    readings["meter"] = {"unit": "Wh", "sum": 12.5 + seq % 11}
    readings["fan"] = {"unit": "bool", "any": True, "on_fraction": 0.25}
    return {
        "device_id": device,
        "seq": seq,
        "start": rfc3339_utc(FIRST_MINUTE + timedelta(minutes=seq)).replace(".000Z", "Z"),
        "period_s": 60,
        "readings": readings,
    }


def signed(key: NamedKey, count: int, first: int = 0) -> list[Submission]:
    """Signed submissions with their canonical payload bytes, as a contract hands them over."""
    out = []
    for seq in range(first, first + count):
        payload = minute(key.name, seq)
        jcs = canonical_json(payload)
        out.append(
            Submission(
                contract=CONTRACT,
                payload=payload,
                sig=key.sign_payload(payload),
                device_id=key.name,
                seq=seq,
                minute=str(payload["start"]),  # as the contract sets it: one slot per minute
                payload_jcs=jcs,
            )
        )
    return out


def filler(count: int, first: int) -> list[Submission]:
    """Cheap distinct submissions to grow a big tree (proof cost does not depend on content)."""
    return [
        Submission(
            contract=CONTRACT,
            payload={},
            sig="",
            device_id="filler",
            seq=seq,
            payload_jcs=b'{"device_id":"filler","seq":%d}' % seq,
        )
        for seq in range(first, first + count)
    ]


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--append-entries", type=int, default=50_000)
    parser.add_argument("--seal-leaves", type=int, default=100_000)
    parser.add_argument("--proof-entries", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="patio-bench-"))
    key = NamedKey.generate("bench.example/log")
    device = NamedKey.generate("bench-device")

    def fresh(name: str) -> Log:
        url = args.database_url or f"sqlite:///{folder / name}.sqlite3"
        return Log.open(url=url, signer=key)

    print(f"backend: {args.database_url or 'SQLite (WAL, synchronous=FULL)'}")

    # 1. Durable append: batches of 1,000, each one committed before the next.
    log = fresh("append")
    batches = [signed(device, 1000, first) for first in range(0, args.append_entries, 1000)]
    elapsed = sum(timed(lambda b=batch: log.append(b)) for batch in batches)  # type: ignore[misc]
    print(
        f"append: {args.append_entries / elapsed:,.0f} entries/s "
        f"({args.append_entries:,} entries, batches of 1,000, one commit each)"
    )

    # 2. Seal 100,000 new leaves on top of what is there.
    log.seal()
    for first in range(0, args.seal_leaves, 10_000):
        log.append(filler(10_000, first))
    seal_s = timed(log.seal)
    print(f"seal: {seal_s * 1000:,.0f} ms for {args.seal_leaves:,} new leaves")

    # 3. Inclusion-proof latency at N entries (against the latest checkpoint).
    big = fresh("proofs")
    for first in range(0, args.proof_entries, 20_000):
        big.append(filler(min(20_000, args.proof_entries - first), first))
    big.seal()
    size = args.proof_entries
    rng = random.Random(7)
    samples = []
    for _ in range(args.samples):
        index = rng.randrange(size)
        samples.append(timed(lambda i=index: big.inclusion_proof(i, size)))  # type: ignore[misc]
    print(
        f"inclusion proof at {size:,} entries: p50 {percentile(samples, 50) * 1000:.3f} ms, "
        f"p99 {percentile(samples, 99) * 1000:.3f} ms ({args.samples:,} leaves)"
    )

    # 4. Bundle verification (entry hash, inclusion, checkpoint and device signatures).
    tags = [a.entry.log_tag_id for a in log.append(signed(device, 1, 10**7))]  # type: ignore[union-attr]
    log.seal()
    bundle = log.bundle(tags[0], device_key=device.public_key_b64).to_json()
    verify = [
        timed(lambda: verify_bundle(bundle, log_key=key.verifier_key)) for _ in range(args.samples)
    ]
    print(
        f"bundle verification: p50 {percentile(verify, 50) * 1000:.3f} ms, "
        f"p99 {percentile(verify, 99) * 1000:.3f} ms per bundle "
        f"(tree size {bundle['inclusion']['tree_size']:,})"
    )


if __name__ == "__main__":
    main()
