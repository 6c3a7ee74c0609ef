"""Alembic environment: always handed a live connection by idp_bridge.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from idp_bridge.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through idp_bridge.store (Store.upgrade), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
