"""Alembic environment: runs on the connection ``daemon.state.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from daemon.state.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them; alembic's batch mode does that.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
