"""Two gateway processes on one PostgreSQL database: one log, one sealer at a time."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger import merkle
from ledger.note import Checkpoint, NoteVerifier
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_api import envelope, minute, submit


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    fast = {"PATIO_SEAL_INTERVAL": "0.2", "PATIO_SEAL_ENTRIES": "7"}
    first = start_gateway(tmp_path, database_url=url, extra_env=fast)
    second = start_gateway(tmp_path, database_url=url, extra_env=fast)  # same keys, same DB
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_two_processes_keep_one_consistent_log(pair: tuple[Gateway, Gateway]) -> None:
    first, second = pair
    devices = [first.device(f"meter-{i}", "hoa-1") for i in range(4)]

    def load(i: int) -> list[str]:
        target = (first, second)[i % 2]
        key = devices[i % 4]
        results = submit(target, *(envelope(key, minute(key.name, i * 10 + s)) for s in range(5)))
        assert {r["status"] for r in results} == {"accepted"}
        return [r["log_tag_id"] for r in results]

    with ThreadPoolExecutor(8) as pool:
        tags = [tag for batch in pool.map(load, range(40)) for tag in batch]
    assert len(set(tags)) == 200
    final = first.seal()
    verifier = NoteVerifier.parse(httpx.get(f"{second.url}/v1/log-key").text.strip())
    history = httpx.get(f"{second.url}/v1/checkpoints", params={"limit": 1000}).json()
    sizes = [c["tree_size"] for c in history["checkpoints"]]
    assert sizes == sorted(set(sizes)) and sizes[-1] == final["tree_size"] == 200 + 5
    assert len(sizes) > 3, "the sealers should have sealed along the way"
    notes = [Checkpoint.open(c["note"], verifier) for c in history["checkpoints"]]
    for old, new in itertools.pairwise(notes):
        proof = httpx.get(
            f"{first.url}/v1/proofs/consistency",
            params={"first": old.tree_size, "second": new.tree_size},
        ).json()
        merkle.verify_consistency(
            old.tree_size,
            new.tree_size,
            [bytes.fromhex(h) for h in proof["hashes"]],
            old.root_hash,
            new.root_hash,
        )
    for server in pair:
        log = (server.data_dir / f"gateway-{server.url.rsplit(':', 1)[1]}.log").read_text()
        assert "Traceback" not in log and "seal failed" not in log, log[-2000:]


def test_a_revocation_through_one_process_binds_the_other_at_once(
    pair: tuple[Gateway, Gateway],
) -> None:
    first, second = pair
    key = first.device("meter-r", "hoa-1")
    assert submit(second, envelope(key, minute(key.name, 1)))[0]["status"] == "accepted"
    assert first.admin.post(f"/v1/devices/{key.name}/revoke").json()["revoked"]
    # The other process's writer re-reads device changes before each commit: no grace period.
    refused = submit(second, envelope(key, minute(key.name, 2)))[0]
    assert refused["code"] == 403 and "revoked" in refused["error"], refused


@pytest.fixture(params=["sqlite", "postgresql"])
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Gateway]]:
    """Three gateway processes, each with its writer, on one SQLite file or PostgreSQL schema."""
    url: str | None = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    started = [start_gateway(tmp_path, database_url=url)]  # migrates, creates the keys
    try:
        started += [start_gateway(tmp_path, database_url=url) for _ in range(2)]
        yield started
    finally:
        for server in started:
            server.stop()


def test_a_revocation_binds_every_process_at_once_under_load(processes: list[Gateway]) -> None:
    key = processes[0].device("meter-r", "hoa-1")
    seqs = itertools.count(1)
    results: list[tuple[bool, int, dict[str, Any]]] = []  # (sent after the revocation, process)
    failures: list[str] = []
    progress = threading.Condition()
    revoked = threading.Event()  # set once the revocation's response has arrived
    stop = threading.Event()

    def hammer(target: int) -> None:
        try:
            with processes[target].client() as client:
                while not stop.is_set():
                    with progress:
                        seq = next(seqs)
                    after = revoked.is_set()
                    body = {"contract": "energy_minute", "envelopes": [
                        envelope(key, minute(key.name, seq))]}  # fmt: skip
                    reply = client.post("/v1/entries", json=body)
                    assert reply.status_code == 200, reply.text
                    with progress:
                        results.append((after, target, reply.json()["results"][0]))
                        progress.notify_all()
        except Exception as exc:  # the test fails on it, not a thread that dies unseen
            with progress:
                failures.append(f"{type(exc).__name__}: {exc}")
                progress.notify_all()

    def wait_for(condition: Any, what: str) -> None:
        with progress:
            done = progress.wait_for(lambda: condition() or bool(failures), 60)
        assert done and not failures, f"{what}: {failures or 'timed out'}"

    def answered_after(target: int) -> int:
        return sum(1 for after, t, _ in results if after and t == target)

    threads = [threading.Thread(target=hammer, args=(i % 3,)) for i in range(9)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(r["status"] == "accepted" for _, _, r in results) >= 30, "load")
        reply = processes[1].admin.post(f"/v1/devices/{key.name}/revoke")
        assert reply.status_code == 200 and reply.json()["revoked"], reply.text
        revoked.set()
        wait_for(lambda: all(answered_after(t) >= 20 for t in range(3)), "answers after it")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures
    for after, target, result in results:
        if after:  # sent after the revocation's response: refused by every process
            assert result["code"] == 403 and "revoked" in result["error"], (target, result)
    accepted = {r["log_tag_id"] for _, _, r in results if r["status"] == "accepted"}

    log = processes[2].export()
    [revocation] = [
        item for item in log
        if item["entry"]["contract"].startswith("registry")
        and item["entry"]["payload"]["action"] == "revoke_device"
    ]  # fmt: skip
    recorded = [item for item in log if item["entry"]["payload"]["device_id"] == key.name]
    assert {item["log_tag_id"] for item in recorded} == accepted
    # The log's order is the truth an auditor replays: nothing of the device after its
    # revocation. (A registry entry's received_at is when the change was planned, which
    # may be before entries that committed ahead of it.)
    late = [item["index"] for item in recorded if item["index"] > revocation["index"]]
    assert not late, f"entries after the revocation at {revocation['index']}: {late}"
