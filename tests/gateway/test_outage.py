"""A database outage or restart: the gateway answers 503 with Retry-After, never 500, loses
nothing it acknowledged, and serves again once the database is back (PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from gateway.problems import database_unavailable
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.gateway.server import Gateway, start_gateway
from tests.gateway.test_api import envelope, is_problem, minute, submit
from tests.wait import wait_until


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[Gateway, Engine, str]]:
    """A gateway on a database of its own, and a superuser engine to take it away."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"patio_outage_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    gateway = start_gateway(tmp_path, database_url=url)
    try:
        yield gateway, admin, name
    finally:
        gateway.stop()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def drop_connections(admin: Engine, name: str) -> int:
    """Close every open connection to database `name`, as a server restart does."""
    with admin.connect() as conn:
        dropped: int = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name"
            ),
            {"name": name},
        ).scalar_one()
    return dropped


def test_a_database_outage_is_a_503_and_nothing_is_lost(
    outage: tuple[Gateway, Engine, str],
) -> None:
    gateway, admin, name = outage
    key = gateway.device("meter-o", "hoa-o")
    before = submit(gateway, envelope(key, minute(key.name, 1)))[0]
    assert before["status"] == "accepted"
    with admin.connect() as conn:  # refuse new connections, then drop the open ones
        conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
    drop_connections(admin, name)
    body = {"contract": "energy_minute", "envelopes": [envelope(key, minute(key.name, 2))]}
    with gateway.client(gateway.admin_token) as client:
        for reply in (
            client.get("/v1/checkpoint"),
            client.get(f"/v1/entries/{before['log_tag_id']}"),
            client.post("/v1/entries", json=body),
            client.get("/readyz"),
        ):
            assert is_problem(reply, 503), reply.request.url
            assert reply.headers.get("Retry-After") or reply.request.url.path == "/readyz"
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
    replies: list[httpx.Response] = []
    with gateway.client() as client:

        def served() -> bool:
            replies.append(client.post("/v1/entries", json=body))
            return replies[-1].status_code != 503

        wait_until(served, 10, "the gateway to serve again", interval=0.2)
    reply = replies[-1]
    assert reply.status_code == 200 and reply.json()["results"][0]["status"] == "accepted"
    again = submit(gateway, envelope(key, minute(key.name, 1)))[0]
    assert again == {**before, "status": "duplicate", "code": 200}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200


def test_connections_dropped_by_the_database_cost_a_retry_not_an_entry(
    outage: tuple[Gateway, Engine, str],
) -> None:
    from tests.gateway.test_writer import writer_pid

    gateway, admin, name = outage
    key = gateway.device("meter-d", "hoa-d")
    assert submit(gateway, envelope(key, minute(key.name, 1)))[0]["status"] == "accepted"
    writer = writer_pid(gateway)
    assert drop_connections(admin, name) > 0
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


def test_only_an_unusable_database_counts_as_an_outage() -> None:
    import sqlite3

    import psycopg
    import sqlalchemy.exc

    assert database_unavailable(psycopg.OperationalError("connection refused"))
    assert database_unavailable(sqlite3.OperationalError("database is locked"))
    assert database_unavailable(sqlalchemy.exc.TimeoutError("QueuePool limit reached"))
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("gone"))
    assert database_unavailable(wrapped)
    assert not database_unavailable(sqlite3.OperationalError("no such table: entries"))
    assert not database_unavailable(psycopg.errors.SyntaxError("syntax error"))
    assert not database_unavailable(ValueError("a bug"))
