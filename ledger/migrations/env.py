"""Alembic environment for the ledger's schema; the engine is handed in by ledger.storage."""

from __future__ import annotations

from alembic import context

from ledger.storage import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.get_main_option("version_table") or "alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
