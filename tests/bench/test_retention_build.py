"""bench.retention's bulk builder writes the log the gateway writes: the same rows and the
same checkpoint as entries appended one by one through Log.append with the writer's hooks,
and `patio audit` and `patio verify` pass on it before and after a retention run (SQLite
and PostgreSQL)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import MetaData, create_engine, func, select, text

from bench.retention import COMMUNITY, CONTRACT, build, enrol, minute_payload
from gateway import retention
from gateway.directory import Directory
from gateway.readings import ReadingIndex
from gateway.rollups import Rollups
from gateway.store import upgrade
from gateway.writer import within_all
from ledger.keys import NamedKey
from ledger.log import Appended, Log, Submission
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.gateway.server import patio

DEVICES, MINUTES, JOB_MINUTES = 3, 90, 45  # 270 entries: two leaf chunks, hours split by jobs
# Every table the append path writes for an energy_minute, in a fixed order.
TABLES = {
    "entries": "idx",
    "merkle_chunks": "level, chunk",
    "readings": "idx",
    "rollups": "community_id, hour, device_id, sensor",
    "rollup_days": "community_id, day",
    "rollup_progress": "id",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases on one backend: (for the bulk build, for the append path)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/bulk.sqlite3", f"sqlite:///{tmp_path}/appended.sqlite3"
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schemas = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for schema in schemas:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        bulk, appended = (f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{s}" for s in schemas)
        yield bulk, appended
    finally:
        with admin.connect() as conn:
            for schema in schemas:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _new_log(url: str, signer: NamedKey) -> Log:
    log = Log.open(url=url, signer=signer)
    upgrade(log.engine)
    return log


def _copy(source: Log, target: Log) -> None:
    """Every row of every table the migrations left empty: the registry entries and the
    directory they made."""
    tables = MetaData()
    tables.reflect(source.engine)
    with source.engine.connect() as read, target.engine.begin() as write:
        for table in tables.sorted_tables:
            if write.execute(select(func.count()).select_from(table)).scalar_one():
                continue  # alembic's version, the progress rows the migrations seed
            if rows := [dict(row._mapping) for row in read.execute(table.select())]:
                write.execute(table.insert(), rows)


def _append_one_by_one(log: Log, keys: list[NamedKey], epoch: int) -> None:
    """The same minutes in the same order, each appended as the gateway's writer appends an
    accepted energy_minute (the reading index and rollup hooks), then sealed."""
    directory = Directory(log.engine, registry_key=NamedKey.generate("registry").public_key_b64)
    hooks = within_all(
        ReadingIndex(log.engine, directory).write, Rollups(log.engine, directory).write
    )
    for first in range(0, MINUTES, JOB_MINUTES):
        for key in keys:
            for n in range(first, first + JOB_MINUTES):
                payload = minute_payload(key.name, n, epoch + 60 * n)
                submission = Submission(
                    contract=CONTRACT,
                    payload=payload,
                    sig=key.sign_payload(payload),
                    device_id=key.name,
                    seq=n,
                    minute=payload["start"],
                )
                received = datetime.fromtimestamp(epoch + 60 * n + 60, UTC)
                [outcome] = log.append([submission], now=received, within=hooks)
                assert isinstance(outcome, Appended) and outcome.status == "accepted"
    log.seal()


def _rows(log: Log) -> dict[str, list[tuple[object, ...]]]:
    found = {}
    with log.engine.connect() as conn:
        for table, order in TABLES.items():
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
            found[table] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows
            ]
        found["checkpoints"] = [
            (size, bytes(root), note)
            for size, root, note in conn.execute(
                text("SELECT tree_size, root_hash, note FROM checkpoints")
            )
        ]
    return found


def test_bulk_build_is_the_log_the_gateway_writes(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    bulk_url, appended_url = two_databases
    signer = NamedKey.generate("bench.example/log")
    keys = [NamedKey.generate(f"bench-{d:03d}") for d in range(DEVICES)]
    epoch = (int(time.time()) // 86400 - 3) * 86400
    data_dir = tmp_path / "data"  # where `patio audit --local` finds the registry key
    data_dir.mkdir()
    registry = NamedKey.generate("bench.example/registry")
    registry.save(data_dir / "registry.key")
    bulk = _new_log(bulk_url, signer)
    enrol(bulk, keys, registry)
    appended = _new_log(appended_url, signer)
    _copy(bulk, appended)
    bulk.engine.dispose()
    size = build(
        bulk_url, keys, minutes=MINUTES, signer=signer, workers=2, epoch=epoch,
        job_minutes=JOB_MINUTES, progress=False,
    )  # fmt: skip
    registered = 1 + DEVICES  # the community and its devices
    assert size == registered + DEVICES * MINUTES
    _append_one_by_one(appended, keys, epoch)

    built, expected = _rows(bulk), _rows(appended)
    assert len(expected["entries"]) == size
    assert len(expected["readings"]) == DEVICES * MINUTES
    assert expected["rollups"] and expected["rollup_progress"] == [(1, size - 1)]
    for table in expected:
        assert built[table] == expected[table], table
    assert built["checkpoints"][0][:2] == (size, appended.latest_checkpoint().root_hash)  # type: ignore[union-attr]

    env = {**os.environ, "PATIO_DATABASE_URL": bulk_url, "PATIO_DATA_DIR": str(data_dir)}
    log_key = signer.verifier_key
    audit = patio("audit", "--local", "--log-key", log_key, "--full", env=env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert (
        "payloads removed" not in audit.stdout or "0 entries with payloads removed" in audit.stdout
    )

    # The real retention run drops them all; the proofs still verify, the audit still passes.
    retention.set_policy(bulk.engine, COMMUNITY, 1)
    assert retention.apply(bulk) == {COMMUNITY: DEVICES * MINUTES}
    bundle = tmp_path / "bundle.json"
    tag = bulk.entry(registered).log_tag_id
    bundle.write_bytes(orjson.dumps(bulk.bundle(tag, device_key=None).to_json()))
    verify = patio("verify", str(bundle), "--log-key", log_key, env=env, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "PAYLOAD REMOVED: under retention (retention:bench-hoa:1d)" in verify.stdout
    audit = patio("audit", "--local", "--log-key", log_key, "--full", env=env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert f"{DEVICES * MINUTES} entries with payloads removed" in audit.stdout
    bulk.engine.dispose()
    appended.engine.dispose()
