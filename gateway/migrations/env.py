"""Alembic environment for the gateway's tables; the engine is handed in by gateway.store."""

from gateway.store import metadata
from ledger.storage import configure_migrations

configure_migrations(metadata)
