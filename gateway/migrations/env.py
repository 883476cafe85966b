"""Alembic environment for the gateway's tables; the engine is handed in by gateway.store."""

from __future__ import annotations

from alembic import context

from gateway.store import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.get_main_option("version_table") or "alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
