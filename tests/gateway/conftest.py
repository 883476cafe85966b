"""Gateway fixtures: one real server per backend per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.anchoring.conftest import anvil_url  # noqa: F401 -- a real anvil node, shared
from tests.conftest import POSTGRES_ADMIN_URL, require_service
from tests.gateway.server import Gateway, start_gateway


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway on SQLite, then the same tests on PostgreSQL."""
    data_dir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    database_url = None
    schema = None
    if request.param == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        from sqlalchemy import create_engine, text

        schema = f"g_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        database_url = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    server = start_gateway(data_dir, database_url=database_url)
    try:
        yield server
    finally:
        server.stop()
        if schema:
            with admin.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
