"""Operations on a real gateway: metrics after traffic, JSON delivery logs, `patio db`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway.app import REGISTRY_KEY_FILE
from ledger.log import LOG_KEY_FILE
from tests.conftest import POSTGRES_ADMIN_URL
from tests.gateway.server import Gateway, patio, start_gateway
from tests.gateway.test_api import envelope, minute, submit, unique
from tests.wait import wait_until


def patio_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed `patio` command (`python -m ledger.cli` loads ledger.cli twice, and a
    CommandError raised from a plugin then escapes as a traceback)."""
    command = [str(Path(sys.executable).with_name("patio")), *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by name and labels."""
    body = httpx.get(f"{gateway.url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_real_traffic(gateway: Gateway) -> None:
    key = gateway.device(unique("meter"), "hoa-metrics")
    before = scrape(gateway)
    good = envelope(key, minute(key.name, 1))
    forged = {
        **envelope(key, minute(key.name, 2)),
        "sig": envelope(key, minute(key.name, 3))["sig"],
    }
    conflicting = envelope(key, minute(key.name, 1, readings={"m": {"unit": "Wh", "sum": 1.0}}))
    results = submit(gateway, good, good, forged, conflicting)
    assert [r["status"] for r in results] == ["accepted", "duplicate", "rejected", "rejected"]
    assert results[3]["code"] == 409
    gateway.seal()
    after = scrape(gateway)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    outcome = {"contract": "energy_minute@1"}
    assert grew("patio_submissions_total", status="accepted", **outcome) == 1
    assert grew("patio_submissions_total", status="duplicate", **outcome) == 1
    assert grew("patio_submissions_total", status="conflict", **outcome) == 1
    code = str(results[2]["code"])
    refused = [
        labels
        for (name, labels), count in after.items()
        if name == "patio_refusals_total" and dict(labels)["code"] == code and count >= 1
    ]
    assert refused, "the forged envelope is counted as a refusal with its code"
    assert grew("patio_seal_seconds_count") >= 1
    assert (
        value(after, "patio_checkpoint_tree_size")
        >= value(before, "patio_checkpoint_tree_size") + 1
    )
    assert ("patio_writer_queue_depth", frozenset()) in after


def test_json_logs_have_one_line_per_delivery(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, extra_env={"PATIO_LOG_FORMAT": "json"}, log_level="info")
    try:
        key = gateway.device("meter-1", "hoa-1")
        good = envelope(key, minute(key.name, 1))
        bad = {**envelope(key, minute(key.name, 2)), "sig": good["sig"]}
        results = submit(
            gateway,
            good,
            good,
            bad,
            envelope(key, minute(key.name, 1, readings={"m": {"unit": "Wh", "sum": 1.0}})),
        )
        tag = results[0]["log_tag_id"]
        with gateway.client() as client:
            assert client.post("/v1/entries", content=b"{").status_code == 422
    finally:
        gateway.stop()
    lines = (tmp_path / next(p.name for p in tmp_path.glob("gateway-*.log"))).read_text()
    records = [json.loads(line) for line in lines.splitlines()]  # every line is JSON
    deliveries = [r for r in records if r.get("event") == "submission"]
    assert [(r["status"], r["device"], r["seq"]) for r in deliveries] == [
        ("accepted", "meter-1", 1),
        ("duplicate", "meter-1", 1),
        ("rejected", "meter-1", 2),
        ("conflict", "meter-1", 1),
    ]
    assert deliveries[0]["log_tag_id"] == tag and deliveries[0]["code"] == 201
    assert deliveries[2]["log_tag_id"] is None and deliveries[2]["error"]
    assert all(r["level"] == "INFO" and r["logger"] == "patio.deliveries" for r in deliveries)
    [refused] = [r for r in records if r.get("event") == "refusal"]
    assert (refused["method"], refused["path"], refused["code"]) == ("POST", "/v1/entries", 422)


def test_a_bad_log_format_is_one_line_on_stderr(tmp_path: Path) -> None:
    env = {"PATIO_DATA_DIR": str(tmp_path), "PATIO_LOG_FORMAT": "yaml", "PATH": "/usr/bin"}
    done = patio_script("gateway", "serve", env=env)
    assert done.returncode == 2
    assert done.stderr == "patio: PATIO_LOG_FORMAT must be one of text, json, not 'yaml'\n"


def test_db_upgrade_check_then_upgrade(tmp_path: Path, database_url: str) -> None:
    env = {"PATIO_DATA_DIR": str(tmp_path), "PATIO_DATABASE_URL": database_url}
    checked = patio("db", "upgrade", "--check", env=env, check=False)
    assert checked.returncode == 1 and checked.stdout.startswith("not current: ledger at no schema")
    assert patio("db", "upgrade", env=env).stdout.startswith("upgraded: ledger at no schema")
    assert patio("db", "upgrade", "--check", env=env).stdout == "current\n"
    assert patio("db", "upgrade", env=env).stdout == "already current\n"


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """An empty database of the same kind as `database_url`, for a restore."""
    if database_url.startswith("sqlite"):
        yield "sqlite:///" + str(Path(make_url(database_url).database or "").parent / "restored.db")
        return
    name = f"r_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        # The same schema name: pg_restore recreates the schema it dumped.
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def test_backup_under_load_restores_to_an_auditable_serving_gateway(
    tmp_path: Path, database_url: str, fresh_database: str
) -> None:
    source = tmp_path / "source"
    gateway = start_gateway(source, database_url=database_url)
    key = gateway.device("meter-1", "hoa-1")
    acknowledged: list[tuple[int, str]] = []  # (seq, log tag id), in acknowledgement order
    stop = threading.Event()

    def load() -> None:
        seq = 0
        with gateway.client() as client:
            while not stop.is_set():
                batch = [envelope(key, minute(key.name, seq + i)) for i in range(1, 11)]
                reply = client.post(
                    "/v1/entries", json={"contract": "energy_minute", "envelopes": batch}
                )
                assert reply.status_code == 200, reply.text
                acknowledged.extend(
                    (seq + i, r["log_tag_id"]) for i, r in enumerate(reply.json()["results"], 1)
                )
                seq += 10

    writer = threading.Thread(target=load)
    writer.start()
    backup = tmp_path / "backup.db"
    try:
        wait_until(lambda: len(acknowledged) >= 100, 60, "100 acknowledged entries")
        gateway.seal()
        before_backup = list(acknowledged)
        assert "backed up to" in patio("db", "backup", str(backup), env=gateway.env).stdout
        wait_until(lambda: len(acknowledged) >= len(before_backup) + 50, 60, "load after backup")
    finally:
        stop.set()
        writer.join(timeout=60)
        gateway.stop()

    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    for name in (LOG_KEY_FILE, REGISTRY_KEY_FILE):  # the keys are backed up once, as files
        shutil.copy2(source / name, restored / name)
    env = {**gateway.env, "PATIO_DATA_DIR": str(restored), "PATIO_DATABASE_URL": fresh_database}
    assert "restored from" in patio("db", "restore", str(backup), env=env).stdout
    again = patio_script("db", "restore", str(backup), env=env)
    assert again.returncode == 2 and "already holds a ledger" in again.stderr

    server = start_gateway(restored, database_url=fresh_database)
    try:
        pinned = httpx.get(f"{server.url}/v1/log-key").text.strip()
        audit = patio("audit", "--local", "--full", "--log-key", pinned, env=env, check=False)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        exported = {entry["log_tag_id"] for entry in server.export()}
        assert {tag for _, tag in before_backup} <= exported
        # It serves on: the device continues after what the backup holds.
        last = max(seq for seq, tag in acknowledged if tag in exported)
        [result] = submit(server, envelope(key, minute(key.name, last + 1)))
        assert result["status"] == "accepted", result
        assert server.seal()["tree_size"] == len(exported) + 1
    finally:
        server.stop()


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    env = {"PATIO_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"}
    (tmp_path / "notes.txt").write_text("hello")
    done = patio_script("db", "restore", str(tmp_path / "notes.txt"), env=env)
    assert (done.returncode, done.stderr) == (
        2,
        f"patio: {tmp_path}/notes.txt is not a SQLite backup\n",
    )


def test_the_body_limit_is_a_setting(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, extra_env={"PATIO_MAX_BODY_BYTES": "2000"})
    try:
        key = gateway.device("meter-1", "hoa-1")
        assert submit(gateway, envelope(key, minute(key.name, 1)))[0]["status"] == "accepted"
        with gateway.client() as client:
            reply = client.post("/v1/entries", content=b" " * 2001)
        assert reply.status_code == 413 and "limited to 2000 bytes" in reply.json()["detail"]
    finally:
        gateway.stop()
