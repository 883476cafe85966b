"""Alembic environment for the ledger's schema; the engine is handed in by ledger.storage."""

from ledger.storage import configure_migrations, metadata

configure_migrations(metadata)
