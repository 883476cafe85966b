"""Two gateway processes on one PostgreSQL database: one log, one sealer at a time."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    # Pinged: a test drops every connection to the database, this one's pooled one too.
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
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


def test_connections_dropped_by_the_database_cost_a_retry_not_an_entry(
    pair: tuple[Gateway, Gateway],
) -> None:
    from sqlalchemy import create_engine, text

    from tests.gateway.test_writer import writer_pid

    gateway = pair[0]
    key = gateway.device("meter-d", "hoa-1")
    assert submit(gateway, envelope(key, minute(key.name, 1)))[0]["status"] == "accepted"
    writer = writer_pid(gateway)
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # what a server restart does to every open connection
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        ).scalar_one()
    admin.dispose()
    assert dropped > 0
    body = {"contract": "energy_minute", "envelopes": [envelope(key, minute(key.name, 2))]}
    answers = []
    with gateway.client() as client:
        for _ in range(5):
            reply = client.post("/v1/entries", json=body)
            answers.append(reply.status_code)
            if reply.status_code == 200:
                break
            assert reply.status_code == 503 and reply.headers["Retry-After"], reply.text
    # The writer's connections are not pinged when taken from the pool: the first commit on
    # a dropped one fails (a 503: before, its reply hung every later request), the writer
    # then opens new connections, and the resend goes through.
    assert answers[-1] == 200 and len(answers) <= 2, answers
    assert reply.json()["results"][0]["status"] == "accepted"
    assert writer_pid(gateway) == writer  # no restart: the writer survived it
    resent = submit(gateway, *(envelope(key, minute(key.name, s)) for s in (1, 2)))
    assert [r["status"] for r in resent] == ["duplicate", "duplicate"]
