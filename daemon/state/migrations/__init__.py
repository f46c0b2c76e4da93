"""Alembic migrations of the node database (applied at start-up by ``state.migrate``)."""
